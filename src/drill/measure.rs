//! RTO, RPO and the verdict of a drill, from its run log alone (docs/drills.md defines them).
//!
//! - The incident is the end of the injection: the last `step_succeeded` of an inject step.
//! - RTO runs from the incident to the steady state holding again: the last `step_succeeded` of
//!   the checks after the recovery.
//! - RPO runs from the incident back to the oldest point in time of the data the recovery brought
//!   back: the `RESTORED_AS_OF` output of each recovery step that has one (a restored backup's
//!   `consistent_at`, a promoted replica's `replayed_at`). Oldest, because data lost in any store
//!   is data lost.

use serde::Serialize;
use serde_json::Value;

use super::Part;
use crate::engine::{Event, Recorded, RunStatus};
use crate::runlog::unix_ms as ms;

/// What ties a report to its evidence: the run log, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// SHA-256 of the log's last line, the end of its hash chain.
    pub log_hash: String,
    pub log_lines: u64,
    /// Whether the chain verified (`lifeboat verify`).
    pub log_intact: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub run: String,
    pub runbook: String,
    pub version: String,
    pub file: String,
    pub file_sha256: String,
    pub scenario: String,
    pub description: Option<String>,
    pub operator: String,
    pub host: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// The run's status (`succeeded`, `failed`, `waiting_for_approval`, ...).
    pub status: String,
    pub summary: Option<String>,
    pub outside_targets: Vec<String>,
    pub objectives: Objectives,
    /// The end of the injection.
    pub incident_at: Option<String>,
    /// When the steady state held again.
    pub recovered_at: Option<String>,
    pub rto_ms: Option<u64>,
    pub rpo_ms: Option<u64>,
    /// The oldest restored point in time, and the step that reported it.
    pub restored_as_of: Option<RestorePoint>,
    pub steady_before: Holds,
    pub steady_after: Holds,
    pub passed: bool,
    /// Why it did not pass, one sentence each; empty when it passed.
    pub reasons: Vec<String>,
    /// Facts that do not fail the drill but a reader should know (an objective not set).
    pub notes: Vec<String>,
    pub steps: Vec<StepRow>,
    pub evidence: Evidence,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Objectives {
    pub rto_ms: Option<u64>,
    pub rpo_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestorePoint {
    pub step: String,
    pub output: String,
    pub at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Holds {
    Held,
    Failed,
    /// The checks did not all run (the drill stopped before them, or is still running).
    NotChecked,
}

/// One step of the run, for the timeline. Times are milliseconds from the run's start.
#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    pub id: String,
    pub part: Option<Part>,
    pub action: Option<String>,
    pub outcome: Outcome,
    pub attempts: Vec<Attempt>,
    /// Why it was skipped, or the last error.
    pub detail: Option<String>,
    /// Its compensation, when the run was rolled back.
    pub compensation: Option<Attempt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    Skipped,
    /// Started, end not recorded (a crash), or never started.
    Unfinished,
    Pending,
}

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub attempt: u32,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    pub outcome: Outcome,
    pub error: Option<String>,
}

/// Measures a drill run. `Err` when the log is not a drill's.
pub fn measure(events: &[Recorded], evidence: Evidence) -> Result<DrillReport, String> {
    let Some(Recorded {
        ts: started_at,
        event:
            Event::RunStarted {
                run,
                runbook,
                version,
                file,
                file_sha256,
                operator,
                host,
                drill,
                ..
            },
        ..
    }) = events.first()
    else {
        return Err("the log does not begin with run_started".into());
    };
    let Some(info) = drill else {
        return Err(format!(
            "run {run} is not a drill (it was started by `lifeboat run`, not `lifeboat drill`)"
        ));
    };
    let t0 = ms(started_at).unwrap_or(0);

    let mut rows: Vec<StepRow> = [
        (Part::SteadyBefore, &info.steady_before),
        (Part::Inject, &info.inject),
        (Part::Recovery, &info.recovery),
        (Part::SteadyAfter, &info.steady_after),
    ]
    .into_iter()
    .flat_map(|(part, ids)| ids.iter().map(move |id| (part, id)))
    .map(|(part, id)| StepRow {
        id: id.clone(),
        part: Some(part),
        action: None,
        outcome: Outcome::Pending,
        attempts: Vec::new(),
        detail: None,
        compensation: None,
    })
    .collect();
    // Each event finds its row at once: `metrics` measures every drill in a store.
    let mut index: std::collections::HashMap<String, usize> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.clone(), i))
        .collect();
    let Folded {
        succeeded_at,
        finished,
    } = fold(events, t0, &mut rows, &mut index, false);

    let row = |id: &str| &rows[index[id]];
    let part_rows = |ids: &[String]| -> Vec<&StepRow> { ids.iter().map(|id| row(id)).collect() };
    let holds = |ids: &[String]| -> Holds {
        let rs = part_rows(ids);
        if rs.iter().any(|r| r.outcome == Outcome::Failed) {
            Holds::Failed
        } else if rs
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Succeeded | Outcome::Skipped))
            && rs.iter().any(|r| r.outcome == Outcome::Succeeded)
        {
            Holds::Held
        } else {
            Holds::NotChecked
        }
    };
    let latest = |ids: &[String]| -> Option<&str> {
        ids.iter()
            .filter_map(|id| succeeded_at.get(id.as_str()).map(|(ts, _)| *ts))
            .max_by_key(|ts| ms(ts))
    };
    let steady_before = holds(&info.steady_before);
    let steady_after = holds(&info.steady_after);
    let injected = part_rows(&info.inject)
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Succeeded | Outcome::Skipped))
        && latest(&info.inject).is_some();
    let incident_at = injected.then(|| latest(&info.inject)).flatten();
    let recovered_at = (steady_after == Holds::Held)
        .then(|| latest(&info.steady_after))
        .flatten();
    let span = |from: &str, to: &str| Some((ms(to)? - ms(from)?).max(0) as u64);
    let rto_ms = incident_at.zip(recovered_at).and_then(|(a, b)| span(a, b));

    // The oldest point in time among the data the recovery brought back.
    let mut restored_as_of: Option<RestorePoint> = None;
    let mut unreadable: Vec<String> = Vec::new();
    for id in &info.recovery {
        let (Some((_, outputs)), Some(action)) =
            (succeeded_at.get(id.as_str()), row(id).action.as_deref())
        else {
            continue;
        };
        let Some(output) = crate::actions::restored_as_of(action) else {
            continue;
        };
        match outputs
            .get(output)
            .and_then(Value::as_str)
            .filter(|t| ms(t).is_some())
        {
            Some(at) => {
                if restored_as_of.as_ref().is_none_or(|p| ms(at) < ms(&p.at)) {
                    restored_as_of = Some(RestorePoint {
                        step: id.clone(),
                        output: output.into(),
                        at: at.into(),
                    });
                }
            }
            None => unreadable.push(format!("`{id}` did not report `{output}`")),
        }
    }
    let rpo_ms = match (incident_at, &restored_as_of) {
        (Some(i), Some(p)) if unreadable.is_empty() => span(&p.at, i).or(Some(0)),
        _ => None,
    };

    let objectives = Objectives {
        rto_ms: info.rto_objective_ms,
        rpo_ms: info.rpo_objective_ms,
    };
    let text = |m: u64| crate::runbook::duration::format(std::time::Duration::from_millis(m));
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    let status = finished.map_or(RunStatus::Running, |(_, s, _)| s);
    match status {
        RunStatus::Succeeded => {}
        RunStatus::Failed => reasons.push(format!(
            "the run failed: {}",
            finished.map_or("", |(_, _, s)| s)
        )),
        other => reasons.push(format!(
            "the run has not finished (it is {}); `lifeboat resume {run}` continues it",
            other.as_str()
        )),
    }
    match steady_before {
        Holds::Held => {}
        Holds::Failed => reasons.push(
            "the steady state did not hold before the fault, so no fault was injected and nothing was measured".into(),
        ),
        Holds::NotChecked => {}
    }
    if steady_before == Holds::Held && incident_at.is_none() {
        reasons.push("the fault was not injected: an inject step did not succeed".into());
    }
    // The recovery is what a drill tests: a step of it that failed fails the drill, even when
    // `on_failure: continue` let the run go on and the steady state came back by itself.
    if incident_at.is_some() {
        let recovery = part_rows(&info.recovery);
        for r in recovery.iter().filter(|r| r.outcome == Outcome::Failed) {
            reasons.push(format!(
                "recovery step `{}` failed{}: {}",
                r.id,
                if status == RunStatus::Succeeded {
                    " (`on_failure: continue` let the run go on)"
                } else {
                    ""
                },
                r.detail.as_deref().unwrap_or("no error recorded")
            ));
        }
        if status == RunStatus::Succeeded
            && !recovery.is_empty()
            && recovery.iter().all(|r| r.outcome != Outcome::Succeeded)
            && recovery.iter().all(|r| r.outcome != Outcome::Failed)
        {
            reasons.push(
                "no recovery step ran (every one was skipped): the drill tested no recovery".into(),
            );
        }
    }
    if incident_at.is_some() && steady_after != Holds::Held {
        reasons.push(match steady_after {
            Holds::Failed => "the steady state did not hold after the recovery".to_string(),
            _ => "the steady state was not checked after the recovery".to_string(),
        });
    }
    match (rto_ms, objectives.rto_ms) {
        (Some(m), Some(o)) if m > o => reasons.push(format!(
            "RTO {} exceeds the objective of {}",
            text(m),
            text(o)
        )),
        (_, None) => notes.push("no RTO objective is set: the RTO is measured, not judged".into()),
        _ => {}
    }
    match (rpo_ms, objectives.rpo_ms) {
        (Some(m), Some(o)) if m > o => reasons.push(format!(
            "RPO {} exceeds the objective of {}",
            text(m),
            text(o)
        )),
        (None, Some(_)) if incident_at.is_some() && steady_after == Holds::Held => {
            reasons.push(rpo_unmeasured(&unreadable))
        }
        (None, None) if incident_at.is_some() => notes.push(format!(
            "{}; no RPO objective is set, so this does not fail the drill",
            rpo_unmeasured(&unreadable)
        )),
        (_, None) => notes.push("no RPO objective is set: the RPO is measured, not judged".into()),
        _ => {}
    }
    if let (Some(p), Some(i)) = (&restored_as_of, incident_at)
        && ms(&p.at) > ms(i)
    {
        notes.push(format!(
            "the data `{}` brought back is as of {}, after the incident: it may hold the fault itself",
            p.step, p.at
        ));
    }
    if !info.outside_targets.is_empty() {
        notes.push(format!(
            "run with --i-know against connections that are not drill targets: {}",
            info.outside_targets.join(", ")
        ));
    }

    Ok(DrillReport {
        run: run.clone(),
        runbook: runbook.clone(),
        version: version.clone(),
        file: file.clone(),
        file_sha256: file_sha256.clone(),
        scenario: info.scenario.clone(),
        description: info.description.clone(),
        operator: operator.clone(),
        host: host.clone(),
        started_at: started_at.clone(),
        finished_at: finished.map(|(ts, _, _)| ts.to_string()),
        status: status.as_str().into(),
        summary: finished.map(|(_, _, s)| s.to_string()),
        outside_targets: info.outside_targets.clone(),
        objectives,
        incident_at: incident_at.map(String::from),
        recovered_at: recovered_at.map(String::from),
        rto_ms,
        rpo_ms,
        restored_as_of,
        steady_before,
        steady_after,
        passed: reasons.is_empty(),
        reasons,
        notes,
        steps: rows,
        evidence,
    })
}

impl DrillReport {
    /// Every attempt that ended with an error, with its step, in timeline order.
    pub fn failed_attempts(&self) -> impl Iterator<Item = (&StepRow, &Attempt)> {
        failed_attempts(&self.steps)
    }
}

/// Every attempt of `steps` that ended with an error, with its step, in timeline order.
pub fn failed_attempts(steps: &[StepRow]) -> impl Iterator<Item = (&StepRow, &Attempt)> {
    steps
        .iter()
        .flat_map(|s| s.attempts.iter().map(move |a| (s, a)))
        .filter(|(_, a)| a.error.is_some())
}

impl StepRow {
    /// "succeeded", "skipped: `when: …` is false", "failed: …; compensation succeeded".
    pub fn result_text(&self) -> String {
        let mut t = self.outcome.as_str().to_string();
        if let Some(d) = &self.detail
            && self.outcome != Outcome::Succeeded
        {
            t = format!("{t}: {d}");
        }
        if let Some(c) = &self.compensation {
            t = format!("{t}; compensation {}", c.outcome.as_str());
        }
        t
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Unfinished => "unfinished",
            Outcome::Pending => "not run",
        }
    }
}

/// What folding a run's step events gives besides the rows: when and with what outputs each
/// step succeeded, and how the run finished (its last `run_finished`).
pub(super) struct Folded<'a> {
    pub succeeded_at: std::collections::HashMap<&'a str, (&'a str, &'a Value)>,
    pub finished: Option<(&'a str, RunStatus, &'a str)>,
}

/// Folds a run's step events into its rows (`index` finds a step's row), times in ms from
/// `t0`. A step without a row gets one at the end when `more`, in the order steps first appear;
/// otherwise its events are not drawn.
pub(super) fn fold<'a>(
    events: &'a [Recorded],
    t0: i64,
    rows: &mut Vec<StepRow>,
    index: &mut std::collections::HashMap<String, usize>,
    more: bool,
) -> Folded<'a> {
    let rel = |ts: &str| ms(ts).map_or(0, |t| (t - t0).max(0) as u64);
    let mut succeeded_at: std::collections::HashMap<&str, (&str, &Value)> = Default::default();
    let mut finished: Option<(&str, RunStatus, &str)> = None;
    for r in events {
        if let Event::RunFinished {
            status, summary, ..
        } = &r.event
        {
            finished = Some((&r.ts, *status, summary));
            continue;
        }
        let Some(step) = r.event.step() else { continue };
        if more && !index.contains_key(step) {
            index.insert(step.to_string(), rows.len());
            rows.push(StepRow {
                id: step.to_string(),
                part: None,
                action: None,
                outcome: Outcome::Pending,
                attempts: Vec::new(),
                detail: None,
                compensation: None,
            });
        }
        let Some(row) = index.get(step).map(|&i| &mut rows[i]) else {
            continue;
        };
        let at = rel(&r.ts);
        match &r.event {
            Event::StepStarted {
                attempt, action, ..
            } => {
                row.action = Some(action.clone());
                row.outcome = Outcome::Unfinished;
                row.attempts.push(Attempt {
                    attempt: *attempt,
                    start_ms: at,
                    end_ms: None,
                    outcome: Outcome::Unfinished,
                    error: None,
                });
            }
            Event::StepAttemptFailed { error, .. } => {
                end_attempt(row, at, Outcome::Failed, Some(error));
                row.detail = Some(error.clone());
            }
            Event::StepFailed { error, .. } => {
                end_attempt(row, at, Outcome::Failed, Some(error));
                row.outcome = Outcome::Failed;
                row.detail = Some(error.clone());
            }
            Event::StepSucceeded { outputs, .. } => {
                end_attempt(row, at, Outcome::Succeeded, None);
                row.outcome = Outcome::Succeeded;
                succeeded_at.insert(step, (&r.ts, outputs));
            }
            Event::StepSkipped { reason, .. } => {
                row.outcome = Outcome::Skipped;
                row.detail = Some(reason.clone());
            }
            Event::StepInterrupted { reason, .. } => {
                end_attempt(row, at, Outcome::Unfinished, Some(reason));
            }
            Event::CompensationStarted { attempt, .. } => {
                row.compensation = Some(Attempt {
                    attempt: *attempt,
                    start_ms: at,
                    end_ms: None,
                    outcome: Outcome::Unfinished,
                    error: None,
                });
            }
            Event::CompensationSucceeded { .. } => {
                if let Some(c) = &mut row.compensation {
                    c.end_ms = Some(at);
                    c.outcome = Outcome::Succeeded;
                }
            }
            Event::CompensationFailed { error, .. } => {
                if let Some(c) = &mut row.compensation {
                    c.end_ms = Some(at);
                    c.outcome = Outcome::Failed;
                    c.error = Some(error.clone());
                }
            }
            _ => {}
        }
    }
    Folded {
        succeeded_at,
        finished,
    }
}

fn rpo_unmeasured(unreadable: &[String]) -> String {
    if unreadable.is_empty() {
        "RPO could not be measured: no recovery step reports the point in time of the data it brought back (postgres.restore's `consistent_at`, postgres.promote's `replayed_at`)".into()
    } else {
        format!("RPO could not be measured: {}", unreadable.join("; "))
    }
}

fn end_attempt(row: &mut StepRow, at: u64, outcome: Outcome, error: Option<&String>) {
    if let Some(a) = row.attempts.last_mut()
        && a.end_ms.is_none()
    {
        a.end_ms = Some(at);
        a.outcome = outcome;
        a.error = error.cloned();
    }
}
