//! The command line. This is the only module that prints: data goes to stdout, everything meant for
//! a person (diagnostics, summaries) to stderr, all through the macros of `out.rs` (lints deny
//! `print!` everywhere: it panics when the reader goes away).

#[macro_use]
mod out;

mod actions;
mod diff;
mod drill;
mod explain;
mod history;
mod plan;
mod report;
mod run;
mod validate;
mod verbose;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::{Error, Result};
use crate::exit::Exit;

#[derive(Debug, Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "Runs versioned YAML runbooks for backup, restore and disaster recovery"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Diagnostics of lifeboat and the clients it uses on stderr (secrets masked): -v info,
    /// -vv debug, -vvv trace. RUST_LOG (e.g. `kube=debug`) chooses them finely instead.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check runbooks: schema and semantics. Every problem is printed as file:line:col.
    Validate {
        /// Files, or folders searched for runbooks (*.yaml, *.yml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also check these param values (`name=value`); missing required params are then errors.
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[arg(long, value_enum, default_value_t = DiagnosticFormat::Human)]
        format: DiagnosticFormat,
    },
    /// What a change to a runbook does to the procedure, for review: steps added, removed and
    /// changed (inputs rendered, secrets masked), destructive steps, objectives, locks and
    /// approvals first. Exits 1 when the procedure changed without a `metadata.version` bump.
    Diff {
        /// The runbook before: a file, or REV:PATH (the file at a git revision, `HEAD~1:x.yaml`).
        old: String,
        /// The runbook after: a file, or REV:PATH.
        new: String,
        /// Params both plans are made with (each side takes those it declares).
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[arg(long, value_enum, default_value_t = diff::DiffFormat::Text)]
        format: diff::DiffFormat,
    },
    /// Show what a run would do: waves, critical path, rendered inputs, destructive steps.
    Plan {
        file: PathBuf,
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Also read, now, what the steps would change (the records a DNS failover replaces).
        /// Reads secrets and talks to the servers; exits 1 if a read fails. Text and json only.
        #[arg(long)]
        live: bool,
        /// Plan this drill scenario: its checks and fault around the runbook's steps, as
        /// `lifeboat drill` runs them.
        #[arg(long, value_name = "NAME")]
        scenario: Option<String>,
    },
    /// Run a runbook. Prints the run id first; progress goes to stderr.
    Run {
        file: PathBuf,
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[command(flatten)]
        driving: run::Driving,
    },
    /// Run a game-day drill: the scenario's steady-state checks, its fault, the runbook's steps,
    /// the checks again; then RTO and RPO against the objectives. Exit 0 when the drill passes.
    Drill {
        file: PathBuf,
        #[command(flatten)]
        drill: drill::DrillArgs,
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// (With --json: the drill report's numbers as JSON on stdout, not the run's events.)
        #[command(flatten)]
        driving: run::Driving,
    },
    /// The report of any run, from its log: the timeline of steps and attempts, approvals (who,
    /// when), errors, outputs (masked) and the log's hash; a postmortem starts from it.
    Report {
        run: String,
        #[arg(long, default_value = ".lifeboat", value_name = "DIR|URL")]
        state: String,
        /// Write the report as one self-contained HTML page.
        #[arg(long, value_name = "PATH")]
        html: Option<PathBuf>,
        /// Write the report as Markdown.
        #[arg(long, value_name = "PATH")]
        md: Option<PathBuf>,
        /// The report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// The report of a drill run, measured again from its log (after `resume`, or for an audit).
    DrillReport {
        run: String,
        #[arg(long, default_value = ".lifeboat", value_name = "DIR|URL")]
        state: String,
        /// Write `PATH.md` and `PATH.html`.
        #[arg(long, value_name = "PATH")]
        report: Option<PathBuf>,
        /// The numbers as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Continue a stopped, failed or crashed run; steps recorded as done are not run again.
    Resume {
        run: String,
        #[command(flatten)]
        driving: run::Driving,
    },
    /// End a paused, waiting, failed or crashed run for good: end what its steps left running,
    /// roll it back when asked, release its locks, and record who ended it and why. A run
    /// driven by another process on this host is asked to stop first, as Ctrl-C asks.
    Abort {
        run: String,
        /// Run the `compensate` of every completed step first, newest first.
        #[arg(long)]
        rollback: bool,
        /// Why, for the record (the run log, `show`, reports).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        #[command(flatten)]
        driving: run::Driving,
    },
    /// Approve a step a run is waiting on (an approval gate, or re-running an interrupted step),
    /// as the identity the state store vouches for: this OS account, or the database role of a
    /// `postgres://` store.
    Approve {
        run: String,
        step: String,
        #[arg(long, default_value = ".lifeboat", value_name = "DIR|URL")]
        state: String,
    },
    /// List runs, newest first.
    Runs {
        #[arg(long, default_value = ".lifeboat", value_name = "DIR|URL")]
        state: String,
        #[arg(long)]
        json: bool,
    },
    /// Prometheus metrics of the runs in a state store: last success per runbook, durations.
    Metrics {
        #[arg(long, default_value = ".lifeboat", value_name = "DIR|URL")]
        state: String,
        /// Write them to this file (atomically, for node_exporter's textfile collector) instead
        /// of stdout.
        #[arg(long, value_name = "PATH")]
        out: Option<std::path::PathBuf>,
    },
    /// One run: its steps, attempts, timings and outputs.
    Show {
        run: String,
        #[arg(long, default_value = ".lifeboat", value_name = "DIR|URL")]
        state: String,
        #[arg(long)]
        json: bool,
    },
    /// Print a run's log; `--json` prints its lines exactly as stored.
    Log {
        run: String,
        #[arg(long, default_value = ".lifeboat", value_name = "DIR|URL")]
        state: String,
        #[arg(long)]
        json: bool,
    },
    /// Check a run log's hash chain: exit 0 intact, 1 tampered (naming the first bad line).
    Verify {
        run: String,
        #[arg(long, default_value = ".lifeboat", value_name = "DIR|URL")]
        state: String,
        #[arg(long)]
        json: bool,
        /// The log hash printed when the run stopped, kept somewhere else (a ticket, CI): the
        /// log's last line must have it. Catches a log and head rewritten together.
        #[arg(long, value_name = "HASH")]
        expect: Option<String>,
    },
    /// Print the runbook JSON Schema.
    Schema,
    /// List the actions, or document one: its `with` fields and outputs.
    Actions {
        name: Option<String>,
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Explain an error code, e.g. `lifeboat explain LB0103`.
    Explain { code: String },
    /// Print shell completions for bash, zsh, fish, elvish or powershell, generated from this
    /// CLI's definition: `lifeboat completions bash > /etc/bash_completion.d/lifeboat`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from this CLI's definition:
    /// `lifeboat man > /usr/local/share/man/man1/lifeboat.1`; or, with `--dir`, write it and a
    /// page per command (`lifeboat-run.1`, ...) into a folder.
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DiagnosticFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PlanFormat {
    Text,
    Json,
    Mermaid,
    Dot,
}

/// Whether to color what goes to stderr.
fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

pub fn main() -> Exit {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Invalid
            } else {
                Exit::Success
            };
        }
    };
    verbose::init(cli.verbose);
    let exit = match dispatch(cli.command) {
        Ok(exit) => exit,
        Err(e) => fail(e),
    };
    crate::actions::support::process::reap();
    exit
}

/// Prints an error once, in the form its kind takes; its exit code.
fn fail(e: Error) -> Exit {
    match &e {
        Error::Runbook { file, diagnostics } => {
            validate::print(file, diagnostics.clone(), DiagnosticFormat::Human)
        }
        _ => errln!("error: {e}"),
    }
    e.exit()
}

fn dispatch(command: Command) -> Result<Exit> {
    match command {
        Command::Validate {
            paths,
            params,
            format,
        } => validate::run(&paths, &params, format),
        Command::Diff {
            old,
            new,
            params,
            format,
        } => diff::run(&old, &new, &params, format),
        Command::Plan {
            file,
            params,
            format,
            live,
            scenario,
        } => plan::run(&file, &params, format, live, scenario.as_deref()),
        Command::Run {
            file,
            params,
            driving,
        } => run::run(&file, &params, &driving),
        Command::Drill {
            file,
            drill,
            params,
            driving,
        } => drill::drill(&file, &params, &drill, &driving),
        Command::DrillReport {
            run,
            state,
            report,
            json,
        } => drill::drill_report(&state, &run, report.as_deref(), json),
        Command::Report {
            run,
            state,
            html,
            md,
            json,
        } => drill::run_report(&state, &run, html.as_deref(), md.as_deref(), json),
        Command::Resume { run, driving } => run::resume(&run, &driving),
        Command::Approve { run, step, state } => run::approve(&run, &step, &state),
        Command::Abort {
            run,
            rollback,
            reason,
            driving,
        } => run::abort(&run, rollback, reason, &driving),
        Command::Runs { state, json } => history::runs(&state, json),
        Command::Metrics { state, out } => history::metrics(&state, out.as_deref()),
        Command::Show { run, state, json } => history::show(&state, &run, json),
        Command::Log { run, state, json } => history::log(&state, &run, json),
        Command::Verify {
            run,
            state,
            json,
            expect,
        } => history::verify(&state, &run, json, expect.as_deref()),
        Command::Schema => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&crate::runbook::schema::generate())
                    .expect("schema serializes")
            );
            Ok(Exit::Success)
        }
        Command::Actions { name, json } => actions::run(name.as_deref(), json),
        Command::Explain { code } => explain::run(&code),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "lifeboat",
                &mut out,
            );
            out!("{}", String::from_utf8_lossy(&out));
            Ok(Exit::Success)
        }
        Command::Man { dir: Some(dir) } => {
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &dir).map_err(
                |e| {
                    Error::Failed(format!(
                        "cannot write the man pages into {}: {e}",
                        dir.display()
                    ))
                },
            )?;
            errln!("man pages written to {}", dir.display());
            Ok(Exit::Success)
        }
        Command::Man { dir: None } => {
            let mut out = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut out)
                .map_err(|e| Error::Failed(format!("cannot write the man page: {e}")))?;
            out!("{}", String::from_utf8_lossy(&out));
            Ok(Exit::Success)
        }
    }
}

/// Parses `-p name=value` arguments; a malformed one is a usage error.
fn parse_params(params: &[String]) -> Result<Vec<(String, String)>> {
    params
        .iter()
        .map(|p| crate::runbook::params::split_assignment(p))
        .collect::<std::result::Result<_, _>>()
        .map_err(|why| Error::Invalid(format!("-p {why}")))
}
