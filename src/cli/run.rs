//! `lifeboat run`, `resume` and `approve`: the command line of [`crate::engine::Session`], which
//! owns the run's lifecycle. This file reads flags, wires the reporter and prints results.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;

use super::parse_params;
use super::report::{HumanSink, JsonSink, NoticeSink};
use crate::engine::signals::OsSignals;
use crate::engine::{
    self, Ended, Live, NewRun, NoPrompter, Prompter, Resumed, Session, Sink, Wiring,
};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::runbook::{ValidRunbook, load_file, params};
use crate::store::Store;

/// What `run`, `resume` and `drill` share on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct Driving {
    /// The state store: a folder, or a `postgres://` URL shared by a team (password from
    /// $PGPASSWORD).
    #[arg(long, default_value = ".lifeboat", value_name = "DIR|URL")]
    pub state: String,
    /// Answer approval gates (and re-runs of interrupted steps) with yes, without asking. For
    /// drills and tests; every such approval is recorded as given by --yes.
    #[arg(long)]
    pub yes: bool,
    /// Never prompt, even on a terminal: stop at the first unanswered gate and exit 3.
    #[arg(long)]
    pub non_interactive: bool,
    /// Steps run at the same time, at most.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_parallel: u16,
    /// A deadline for this process's part of the run, e.g. `45m`. Running steps are cancelled
    /// and the run rolls back when it passes.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// After Ctrl-C, SIGTERM or SIGHUP, how long running steps may take to finish before they are cancelled.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub grace: String,
    /// Stream events as JSON lines on stdout instead of the run id.
    #[arg(long)]
    pub json: bool,
    /// Who is running this, for the record; defaults to $LIFEBOAT_OPERATOR, then $USER. Not a
    /// credential: approvals are by the identity the state store vouches for.
    #[arg(long, env = "LIFEBOAT_OPERATOR")]
    pub operator: Option<String>,
    /// The run and step that started this run (`action: runbook`), recorded in `run_started`.
    #[arg(long, hide = true, value_name = "RUN/STEP")]
    pub parent: Option<String>,
}

/// Who says they are running this: a name for the record, never a credential (approvals are
/// by the identity the state store vouches for). It goes into logs and reports, so a control
/// character or a line break in it is refused.
pub fn operator(given: Option<String>) -> Result<String> {
    let name = given
        .filter(|o| !o.is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(crate::store::os_account);
    if crate::text::bad_name(&name) {
        return Err(Error::Invalid(format!(
            "the operator name `{}` holds a control character or a line break",
            crate::text::printable(&name, false)
        )));
    }
    Ok(name)
}

fn duration_arg(flag: &str, text: &str) -> Result<Duration> {
    crate::runbook::duration::parse(text)
        .map_err(|e| Error::Invalid(format!("--{flag} {text}: {e}")))
}

pub(super) async fn open_store(spec: &str) -> Result<Store> {
    Store::open(spec).await.map_err(Error::Failed)
}

/// The session's options and wiring from the flags: the reporter on stderr (or JSON lines on
/// stdout), the terminal prompter when there is a terminal to ask on.
fn prepare(d: &Driving) -> Result<(engine::Options, Wiring)> {
    let timeout = d
        .timeout
        .as_deref()
        .map(|t| duration_arg("timeout", t))
        .transpose()?;
    let grace = duration_arg("grace", &d.grace)?;
    let interactive =
        !d.non_interactive && std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let (sink, prompter): (Arc<dyn Sink>, Arc<dyn Prompter>) = if d.json {
        (Arc::new(JsonSink), Arc::new(NoPrompter))
    } else {
        let human = HumanSink::new(std::io::stderr().is_terminal());
        let prompter: Arc<dyn Prompter> = if interactive {
            Arc::new(human.prompter())
        } else {
            Arc::new(NoPrompter)
        };
        (Arc::new(human), prompter)
    };
    let opts = engine::Options {
        max_parallel: d.max_parallel as usize,
        yes: d.yes,
        timeout,
        grace,
        operator: operator(d.operator.clone())?,
        state: Some(d.state.clone()),
    };
    let wiring = Wiring {
        sink,
        prompter,
        http: http_client()?,
        runner: Arc::new(Live),
        signals: Box::new(OsSignals::default()),
    };
    Ok((opts, wiring))
}

/// The HTTP client actions share, on the process's one TLS provider: ring (see the TLS note in
/// ARCHITECTURE.md).
pub(super) fn http_client() -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Failed(format!("cannot set up the HTTP client: {e}")))
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

pub(super) fn run(file: &Path, given: &[String], d: &Driving) -> Result<Exit> {
    let (text, rb, values) = load_for_run(file, given)?;
    let ended = start(file, &text, &rb, &values, d, None, !d.json)?;
    Ok(finished(&ended))
}

/// A runbook about to run: the file's bytes (stored with the run), the validated runbook and the
/// param values.
pub(super) type ForRun = (Vec<u8>, ValidRunbook, IndexMap<String, serde_json::Value>);

/// Loads, validates and takes the params of a runbook to run, its `for_each` expanded.
pub(super) fn load_for_run(file: &Path, given: &[String]) -> Result<ForRun> {
    let given = parse_params(given)?;
    let loaded = load_file(file);
    let rb = match loaded.result {
        Ok(rb) => rb,
        Err(diags) => return Err(Error::runbook(loaded.source, diags)),
    };
    let values = match params::resolve(&rb, &given, true) {
        Ok(values) => values,
        Err(diags) => return Err(Error::runbook(loaded.source, diags)),
    };
    super::validate::warn(&loaded.source, &rb);
    // The steps `for_each` makes with these params, as `resume` will make them again.
    let rb = match crate::runbook::expand(&rb, &values) {
        Ok(rb) => rb,
        Err(diags) => return Err(Error::runbook(loaded.source, diags)),
    };
    // What `plan` would refuse, `run` refuses before anything starts: a template that fails
    // with these params is found now, not after destructive steps have run.
    if let Err(diags) = crate::plan::build(&rb, &values) {
        return Err(Error::runbook(loaded.source, diags));
    }
    Ok((loaded.source.text.as_bytes().to_vec(), rb, values))
}

/// Starts and drives a new run of `rb` (validated from `text`, the file's bytes). `drill` marks
/// it as a drill in `run_started`; the id is printed on stdout once the run is recorded.
pub(super) fn start(
    file: &Path,
    text: &[u8],
    rb: &ValidRunbook,
    values: &IndexMap<String, serde_json::Value>,
    d: &Driving,
    drill: Option<Box<crate::drill::DrillInfo>>,
    print_id: bool,
) -> Result<Ended> {
    if let Some(p) = &d.parent
        && (crate::text::bad_name(p) || !p.contains('/'))
    {
        return Err(Error::Invalid(format!("--parent is RUN/STEP, not {p:?}")));
    }
    in_session(d, async |session| {
        let new = NewRun {
            file,
            text,
            runbook: rb,
            params: values,
            drill,
            parent: d.parent.clone(),
        };
        let ready = session.start(new).await?;
        // The id comes once the run is recorded: a script that has it can always resume it.
        if print_id {
            outln!("{}", ready.run_id());
        }
        ready.drive().await
    })
}

/// Runs `f` with a session on the state store the flags name.
fn in_session<T>(d: &Driving, f: impl AsyncFnOnce(Session<'_>) -> Result<T>) -> Result<T> {
    let (opts, wiring) = prepare(d)?;
    runtime().block_on(async {
        let store = open_store(&d.state).await?;
        f(Session {
            store: &store,
            opts,
            wiring,
        })
        .await
    })
}

/// Says how a drive ended; its exit code.
pub(super) fn finished(e: &Ended) -> Exit {
    errln!(
        "run {} {}; log hash {}",
        e.run_id,
        e.status.as_str(),
        e.log_hash
    );
    e.status.exit()
}

pub(super) fn resume(run_id: &str, d: &Driving) -> Result<Exit> {
    in_session(d, async |session| match session.resume(run_id).await? {
        Resumed::AlreadySucceeded => {
            errln!("run {run_id} already succeeded; nothing to resume");
            Ok(Exit::Success)
        }
        Resumed::Ready(ready) => {
            if !d.json {
                outln!("{run_id}");
            }
            Ok(finished(&ready.drive().await?))
        }
    })
}

pub(super) fn abort(
    run_id: &str,
    rollback: bool,
    reason: Option<String>,
    d: &Driving,
) -> Result<Exit> {
    if let Some(r) = &reason
        && (r.trim().is_empty() || r.chars().any(|c| c.is_control()))
    {
        return Err(Error::Invalid(
            "--reason is one line of text: no line breaks or control characters".into(),
        ));
    }
    let abort = engine::session::Abort { rollback, reason };
    in_session(d, async |session| {
        match session.abort(run_id, abort).await? {
            Resumed::AlreadySucceeded => Err(Error::Invalid(format!(
                "run {run_id} succeeded; there is nothing to abort"
            ))),
            Resumed::Ready(ready) => Ok(finished(&ready.drive().await?)),
        }
    })
}

pub(super) fn approve(run_id: &str, step: &str, state: &str) -> Result<Exit> {
    runtime().block_on(async {
        let store = open_store(state).await?;
        let a = engine::session::approve(&store, Arc::new(NoticeSink), run_id, step).await?;
        errln!(
            "approved `{step}` of run {run_id} as {}; `lifeboat resume {run_id}` continues it",
            a.by
        );
        Ok(Exit::Success)
    })
}
