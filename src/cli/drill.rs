//! `lifeboat drill FILE --scenario NAME` and `lifeboat drill-report RUN`: run a game-day scenario
//! as a run, then measure it from its log and write the report.

use std::path::{Path, PathBuf};

use super::run::{Driving, finished, load_for_run, start};
use crate::drill::{self, DrillReport, Evidence};
use crate::engine;
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::runlog;

/// What `drill` adds to `run`'s flags.
#[derive(Debug, clap::Args)]
pub struct DrillArgs {
    /// The scenario to run, from the runbook's `drill.scenarios`.
    #[arg(long)]
    pub scenario: String,
    /// Write the report here: `PATH.md` and `PATH.html` (an extension given is replaced).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,
    /// Run even though the scenario uses connections that are not `drill.targets`; they are
    /// named in the run log and the report.
    #[arg(long)]
    pub i_know: bool,
}

pub(super) fn drill(file: &Path, given: &[String], a: &DrillArgs, d: &Driving) -> Result<Exit> {
    let (text, rb, values) = load_for_run(file, given)?;
    // Expanded already (`load_for_run`), as `resume` expands it: the parts name the steps that run.
    let composed = drill::compose(&rb, &a.scenario).map_err(Error::Invalid)?;
    // The scenario's own steps, checked as `run` checks the runbook's.
    if let Err(diags) = crate::plan::build(&composed.runbook, &values) {
        let source =
            crate::runbook::load_str(&file.display().to_string(), &String::from_utf8_lossy(&text))
                .source;
        return Err(Error::runbook(source, diags));
    }
    let targets = rb
        .drill
        .as_ref()
        .map(|d| d.targets.clone())
        .unwrap_or_default();
    let outside = drill::outside_targets(&composed.runbook, &targets, &values);
    if !outside.is_empty() {
        let list = outside
            .iter()
            .map(|c| format!("`{c}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if !a.i_know {
            return Err(Error::Invalid(format!(
                "scenario `{}` would touch {list}, which {} not listed in `drill.targets`; nothing was started\n  \
                 a drill breaks things on purpose: add them to `drill.targets` if they are drill systems, or pass --i-know to run against them anyway (recorded in the run log)",
                a.scenario,
                if outside.len() == 1 { "is" } else { "are" }
            )));
        }
        errln!("warning: --i-know: running against {list}, which are not drill targets");
    }
    let mut info = composed.info;
    info.outside_targets = outside;
    // `--json` here is the report's numbers on stdout, so progress stays human, on stderr.
    let driving = Driving {
        json: false,
        ..d.clone()
    };
    let ended = start(
        file,
        &text,
        &composed.runbook,
        &values,
        &driving,
        Some(Box::new(info)),
        !d.json,
    )?;
    let exit = finished(&ended);
    let measured = report(&d.state, &ended.run_id, a.report.as_deref(), d.json)?;
    // A run stopped at a gate or by a signal is not a verdict yet: say so with the run's code.
    Ok(match exit {
        Exit::WaitingForApproval | Exit::Interrupted => exit,
        _ if measured.passed => Exit::Success,
        _ => Exit::Failed,
    })
}

/// `lifeboat drill-report RUN`: the report of a drill run, from its log (after `resume`, or
/// again later).
pub(super) fn drill_report(
    state: &str,
    run: &str,
    path: Option<&Path>,
    json: bool,
) -> Result<Exit> {
    let r = report(state, run, path, json)?;
    Ok(if r.passed {
        Exit::Success
    } else {
        Exit::Failed
    })
}

/// A run's events and the evidence that ties a report to them (the log, verified).
fn logged(state: &str, run: &str) -> Result<(Vec<engine::Recorded>, Evidence)> {
    let (text, head) = super::history::log_and_head(state, run)?;
    let verdict = runlog::verify(run, &text, head.as_ref());
    let events = engine::parse_log(&String::from_utf8_lossy(&text)).map_err(Error::Failed)?;
    let evidence = Evidence {
        log_hash: verdict.last_hash.clone(),
        log_lines: verdict.lines,
        log_intact: verdict.first_bad.is_none(),
    };
    Ok((events, evidence))
}

/// Writes a report's file, and its folder if need be.
fn write_report(out: &Path, body: &str) -> Result<()> {
    let dir = out.parent().filter(|d| !d.as_os_str().is_empty());
    let written = match dir {
        Some(d) => std::fs::create_dir_all(d),
        None => Ok(()),
    };
    written
        .and_then(|_| crate::files::replace(out, body.as_bytes(), 0o644))
        .map_err(|e| Error::Failed(format!("cannot write the report to {}: {e}", out.display())))?;
    errln!("report: {}", out.display());
    Ok(())
}

/// `lifeboat report RUN`: any run's report, from its log.
pub(super) fn run_report(
    state: &str,
    run: &str,
    html: Option<&Path>,
    md: Option<&Path>,
    json: bool,
) -> Result<Exit> {
    let (events, evidence) = logged(state, run)?;
    let r = drill::run_report(&events, evidence).map_err(Error::Failed)?;
    if let Some(p) = md {
        write_report(p, &drill::render_run_markdown(&r))?;
    }
    if let Some(p) = html {
        write_report(p, &drill::render_run_html(&r))?;
    }
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&r).expect("the report serializes")
        );
    } else if html.is_none() && md.is_none() {
        out!("{}", drill::render_run_markdown(&r));
    }
    if !r.evidence.log_intact {
        errln!("warning: run {run}'s log fails verification: the report may not be what happened");
        return Ok(Exit::Failed);
    }
    Ok(Exit::Success)
}

fn report(state: &str, run: &str, path: Option<&Path>, json: bool) -> Result<DrillReport> {
    let (events, evidence) = logged(state, run)?;
    let r = drill::measure(&events, evidence).map_err(Error::Invalid)?;
    if let Some(p) = path {
        write_report(&p.with_extension("md"), &drill::render_markdown(&r))?;
        write_report(&p.with_extension("html"), &drill::render_html(&r))?;
    }
    summarize(&r);
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&r).expect("the report serializes")
        );
    }
    Ok(r)
}

fn summarize(r: &DrillReport) {
    let verdict = if r.passed { "PASSED" } else { "FAILED" };
    errln!(
        "drill {verdict}: {} / {} (run {})",
        r.runbook,
        r.scenario,
        r.run
    );
    errln!(
        "  RTO: {}",
        crate::drill::against(r.rto_ms, r.objectives.rto_ms)
    );
    errln!(
        "  RPO: {}",
        crate::drill::against(r.rpo_ms, r.objectives.rpo_ms)
    );
    for why in &r.reasons {
        errln!("  - {why}");
    }
    for n in &r.notes {
        errln!("  note: {n}");
    }
    errln!("  log hash {}", r.evidence.log_hash);
}
