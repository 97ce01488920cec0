//! `lifeboat runs`, `show`, `log`, `verify`: reading runs back. None of these change anything.

use super::report::{describe, ms_text};
use crate::engine::{self, RunState, StepState};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::runlog;
use crate::store::Store;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

async fn open(state: &str) -> Result<Store> {
    let is_url = state.starts_with("postgres://") || state.starts_with("postgresql://");
    if !is_url && !std::path::Path::new(state).join("runs").is_dir() {
        return Err(Error::Invalid(format!(
            "no state folder at {state} (runs are recorded where `lifeboat run` ran, or under --state)"
        )));
    }
    Store::open(state).await.map_err(Error::Failed)
}

async fn read(store: &Store, run: &str) -> Result<Vec<u8>> {
    store.exists(run).await.map_err(Error::Invalid)?;
    store.read_log(run).await.map_err(Error::Failed)
}

/// A run's state from its log; steps come from the events themselves.
fn state_of(text: &[u8]) -> Result<(RunState, Vec<engine::Recorded>), String> {
    let events = engine::parse_log(&String::from_utf8_lossy(text))?;
    let mut ids: Vec<&str> = Vec::new();
    for r in &events {
        if let Some(s) = r.event.step()
            && !ids.contains(&s)
        {
            ids.push(s);
        }
    }
    let st = RunState::replay(ids, &events);
    Ok((st, events))
}

pub(super) fn runs(state: &str, json: bool) -> Result<Exit> {
    runtime().block_on(runs_inner(state, json))
}

/// Each run in the store, newest first, with its state folded from its log (or why the log
/// cannot be read) and the verdict of its verification. A log that cannot be fetched at all is
/// left out.
type Folded = Result<(RunState, Vec<engine::Recorded>), String>;

async fn states(store: &Store) -> Result<Vec<(String, Folded, runlog::Verdict)>> {
    let ids = store.runs().await.map_err(Error::Failed)?;
    let mut states = Vec::new();
    for id in ids {
        let Ok(text) = read(store, &id).await else {
            continue;
        };
        let verdict = checked(store, &id, &text).await;
        states.push((id, state_of(&text), verdict));
    }
    Ok(states)
}

/// How a run's log verifies against its head; a head that cannot be read fails it.
async fn checked(store: &Store, run: &str, text: &[u8]) -> runlog::Verdict {
    match store.head(run).await {
        Ok(head) => runlog::verify(run, text, head.as_ref()),
        Err(e) => runlog::Verdict {
            lines: 0,
            last_hash: String::new(),
            first_bad: Some((0, format!("the head anchor cannot be read: {e}"))),
            unanchored: 0,
        },
    }
}

/// `intact`, or `TAMPERED: line N: why`: what `runs` and `show` say of a run's log.
fn log_word(v: &runlog::Verdict) -> String {
    match &v.first_bad {
        None => "intact".into(),
        Some((line, why)) => format!("TAMPERED: line {line}: {why}"),
    }
}

/// When a run started, for ordering: its log's `started_at` (milliseconds), else the second its
/// id names. Ids alone do not order two runs started in the same second (their suffix is random).
fn started_key(row: &serde_json::Value) -> String {
    if let Some(s) = row["started_at"].as_str() {
        return s.to_string();
    }
    let id = row["id"].as_str().unwrap_or_default();
    match (
        id.get(0..4),
        id.get(4..6),
        id.get(6..8),
        id.get(9..11),
        id.get(11..13),
        id.get(13..15),
    ) {
        (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) => {
            format!("{y}-{mo}-{d}T{h}:{mi}:{s}.000Z")
        }
        _ => String::new(),
    }
}

async fn runs_inner(state: &str, json: bool) -> Result<Exit> {
    let store = open(state).await?;
    let mut rows: Vec<serde_json::Value> = states(&store)
        .await?
        .into_iter()
        .map(|(id, st, verdict)| match st.map(|(st, _)| st) {
            Ok(st) if !st.run.is_empty() => serde_json::json!({
                "id": id,
                "runbook": st.runbook,
                "version": st.version,
                "status": st.status.as_str(),
                "started_at": st.started_at,
                "finished_at": st.finished_at,
                "operator": st.operator,
                "log": log_word(&verdict),
            }),
            // Killed before its first line was durable: nothing ran.
            Ok(_) => {
                serde_json::json!({"id": id, "runbook": null, "version": null, "status": "never_started", "started_at": null, "finished_at": null})
            }
            Err(e) => {
                serde_json::json!({"id": id, "runbook": null, "version": null, "status": "unreadable", "error": e, "started_at": null, "finished_at": null})
            }
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(started_key(r)));
    if json {
        outln!("{}", serde_json::Value::Array(rows));
    } else if rows.is_empty() {
        errln!("no runs in {}", store.describe());
    } else {
        for r in rows {
            // A log that does not verify vouches for nothing it says, its status included.
            let status = match r["log"].as_str() {
                Some(l) if l.starts_with("TAMPERED") => "TAMPERED",
                _ => r["status"].as_str().unwrap_or(""),
            };
            sayln!(
                "{}  {:<22} {:<20} {:<10} {}",
                r["id"].as_str().unwrap_or(""),
                status,
                r["runbook"].as_str().unwrap_or("-"),
                r["version"].as_str().unwrap_or("-"),
                r["started_at"].as_str().unwrap_or("-"),
            );
        }
    }
    Ok(Exit::Success)
}

pub(super) fn metrics(state: &str, out: Option<&std::path::Path>) -> Result<Exit> {
    let states = runtime().block_on(async { states(&open(state).await?).await })?;
    // Runs that never started or cannot be read have no runbook to count them under.
    let summaries: Vec<crate::metrics::RunSummary> = states
        .into_iter()
        .filter_map(|(_, st, v)| st.ok().filter(|(st, _)| !st.run.is_empty()).map(|s| (s, v)))
        .map(|((st, events), v)| crate::metrics::RunSummary {
            verified: v.intact(),
            drill: drill_summary(&events),
            points: recovery_points(&events),
            stored: stored_bytes(&events),
            restored_as_of: restored_as_of(&events),
            status: st.status.as_str().to_string(),
            runbook: st.runbook,
            started_at: st.started_at,
            finished_at: st.finished_at,
        })
        .collect();
    let text = crate::metrics::render(&summaries);
    let Some(path) = out else {
        out!("{text}");
        return Ok(Exit::Success);
    };
    // The collector may read at any moment: it must see the old file or the new one, whole.
    crate::files::replace(path, text.as_bytes(), 0o644)
        .map_err(|e| Error::Failed(format!("cannot write {}: {e}", path.display())))?;
    Ok(Exit::Success)
}

/// Each step that succeeded, with its action and outputs, in the order they succeeded.
fn succeeded(events: &[engine::Recorded]) -> Vec<(&str, &str, &serde_json::Value)> {
    let mut action_of: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for r in events {
        match &r.event {
            engine::Event::StepStarted { step, action, .. } => {
                action_of.insert(step, action);
            }
            engine::Event::StepSucceeded { step, outputs, .. } => {
                if let Some(action) = action_of.get(step.as_str()) {
                    out.push((step.as_str(), *action, outputs));
                }
            }
            _ => {}
        }
    }
    out
}

/// The recovery points the run's steps reported (see `ActionSpec::RECOVERY_POINTS`).
fn recovery_points(events: &[engine::Recorded]) -> Vec<(String, &'static str, i64)> {
    succeeded(events)
        .into_iter()
        .flat_map(|(step, action, outputs)| {
            crate::actions::recovery_points(action)
                .iter()
                .filter_map(move |(of, output)| {
                    let at = outputs
                        .get(*output)
                        .and_then(|v| v.as_str())
                        .and_then(crate::runlog::unix_ms)?;
                    Some((step.to_string(), *of, at))
                })
        })
        .collect()
}

/// The oldest point in time the run's recovery steps restored data from (see
/// `ActionSpec::RESTORED_AS_OF`), in Unix ms.
fn restored_as_of(events: &[engine::Recorded]) -> Option<i64> {
    succeeded(events)
        .into_iter()
        .filter_map(|(_, action, outputs)| {
            let at = outputs
                .get(crate::actions::restored_as_of(action)?)?
                .as_str()?;
            crate::runlog::unix_ms(at)
        })
        .min()
}

/// What the run's backup steps stored (see `ActionSpec::STORED_BYTES`), by step.
fn stored_bytes(events: &[engine::Recorded]) -> Vec<(String, u64)> {
    succeeded(events)
        .into_iter()
        .filter_map(|(step, action, outputs)| {
            let bytes = outputs
                .get(crate::actions::stored_bytes(action)?)?
                .as_u64()?;
            Some((step.to_string(), bytes))
        })
        .collect()
}

/// A finished drill's numbers; `None` for other runs and for drills still going.
fn drill_summary(events: &[engine::Recorded]) -> Option<crate::metrics::DrillSummary> {
    let evidence = crate::drill::Evidence {
        log_hash: String::new(),
        log_lines: 0,
        log_intact: true,
    };
    let r = crate::drill::measure(events, evidence).ok()?;
    r.finished_at.as_ref()?;
    Some(crate::metrics::DrillSummary {
        scenario: r.scenario,
        rto_ms: r.rto_ms,
        rpo_ms: r.rpo_ms,
        passed: r.passed,
    })
}

pub(super) fn show(state: &str, run: &str, json: bool) -> Result<Exit> {
    let (st, verdict) = runtime().block_on(async {
        let store = open(state).await?;
        let text = read(&store, run).await?;
        let verdict = checked(&store, run, &text).await;
        let (st, _) = state_of(&text).map_err(Error::Failed)?;
        Ok::<_, Error>((st, verdict))
    })?;
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&st).expect("state serializes")
        );
        return Ok(Exit::Success);
    }
    if !verdict.intact() {
        // Said first: nothing below can be trusted.
        sayln!("log       {}", log_word(&verdict));
    }
    sayln!("run       {}", st.run);
    sayln!("runbook   {} {}", st.runbook, st.version);
    sayln!("status    {}", st.status.as_str());
    sayln!("operator  {}", st.operator);
    if let Some(p) = &st.parent {
        // `RUN/STEP`: the step of another run that started this one.
        sayln!(
            "parent    {p} (`lifeboat show {}`)",
            p.split('/').next().unwrap_or(p)
        );
    }
    sayln!("started   {}", st.started_at);
    sayln!("finished  {}", st.finished_at.as_deref().unwrap_or("-"));
    if let Some(s) = &st.summary {
        sayln!("summary   {s}");
    }
    sayln!("");
    for (id, r) in &st.steps {
        let (word, detail) = match &r.state {
            StepState::Pending => ("pending", String::new()),
            StepState::Running { attempt } => ("running", format!("attempt {attempt}")),
            StepState::Retrying { attempt } => ("retrying", format!("after attempt {attempt}")),
            StepState::Succeeded { attempt } => ("succeeded", format!("attempt {attempt}")),
            StepState::Failed { continued } => (
                "failed",
                if *continued {
                    "run went on".into()
                } else {
                    String::new()
                },
            ),
            StepState::Skipped { reason, .. } => ("skipped", reason.clone()),
            StepState::WaitingApproval => ("waiting", "for approval".into()),
            StepState::Interrupted { attempt } => ("interrupted", format!("attempt {attempt}")),
            StepState::Compensated => ("compensated", String::new()),
        };
        let took = r.elapsed_ms.map(ms_text).unwrap_or_default();
        sayln!("  {id:<24} {word:<12} {took:>8}  {detail}");
        if let Some(e) = &r.last_error
            && !matches!(r.state, StepState::Succeeded { .. })
        {
            sayln!("  {:<24} error: {e}", "");
        }
        if let Some(o) = &r.outputs {
            let text = o.to_string();
            let shown: String = text.chars().take(200).collect();
            let more = if text.chars().count() > 200 {
                "…"
            } else {
                ""
            };
            sayln!("  {:<24} outputs: {shown}{more}", "");
        }
    }
    Ok(Exit::Success)
}

pub(super) fn log(state: &str, run: &str, json: bool) -> Result<Exit> {
    let text = runtime().block_on(async { read(&open(state).await?, run).await })?;
    if json {
        use std::io::Write;
        let _ = std::io::stdout().write_all(&text);
        return Ok(Exit::Success);
    }
    let events = engine::parse_log(&String::from_utf8_lossy(&text)).map_err(|e| {
        Error::Failed(format!(
            "{e} (`lifeboat verify {run}` says whether it was tampered with)"
        ))
    })?;
    for r in events {
        sayln!("{:>4} {} {}", r.seq, r.ts, describe(&r.event));
    }
    Ok(Exit::Success)
}

/// A run's log and the head anchor kept beside it: what `verify` checks, and what a drill
/// report is computed from and vouched for by.
pub(super) fn log_and_head(state: &str, run: &str) -> Result<(Vec<u8>, Option<runlog::Head>)> {
    runtime().block_on(async {
        let store = open(state).await?;
        let text = read(&store, run).await?;
        let head = store
            .head(run)
            .await
            .map_err(|e| Error::Failed(format!("run {run}: {e}")))?;
        Ok((text, head))
    })
}

pub(super) fn verify(state: &str, run: &str, json: bool, expect: Option<&str>) -> Result<Exit> {
    let (text, head) = log_and_head(state, run)?;
    let mut v = runlog::verify(run, &text, head.as_ref());
    if let (None, Some(hash)) = (&v.first_bad, expect)
        && let Err(why) = runlog::expect(&text, &v, hash)
    {
        v.first_bad = Some((v.lines, why));
    }
    if json {
        outln!("{}", serde_json::to_string(&v).expect("verdict serializes"));
    }
    match &v.first_bad {
        None => {
            let note = if v.unanchored > 0 {
                format!(
                    "; the last {} lines were written by a process that has not stopped cleanly (running, or crashed: `lifeboat resume {run}`)",
                    v.unanchored
                )
            } else {
                String::new()
            };
            errln!(
                "run {run}: intact, {} lines, last hash {}{note}",
                v.lines,
                v.last_hash
            );
            Ok(Exit::Success)
        }
        // The verdict, not a failure of the command: it is what was asked.
        Some((line, why)) => {
            errln!("run {run}: TAMPERED: line {line}: {why}");
            Ok(Exit::Failed)
        }
    }
}
