//! The closed set of things that happen in a run. The engine emits them; the run log stores them
//! (one per line, docs/run-log.md); reporters render them; `resume` rebuilds a run's state from them. Adding
//! a variant is a format change: docs/run-log.md lists them all.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// `run_started` is the large one, and there is one per run: boxing it would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run: String,
        runbook: String,
        version: String,
        /// The runbook file as given on the command line.
        file: String,
        file_sha256: String,
        params: Map<String, Value>,
        operator: String,
        host: String,
        pid: u32,
        lifeboat: String,
        locks: Vec<String>,
        max_parallel: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        /// `--yes` was given: approvals are answered without a person.
        #[serde(default)]
        yes: bool,
        /// Set by `lifeboat drill`: the scenario, its objectives and which step is in which part.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        drill: Option<Box<crate::drill::DrillInfo>>,
        /// The runbook file's folder, absolute: where the files its `action: runbook` steps
        /// name are found, from any folder a resume is run in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir: Option<String>,
        /// `RUN/STEP`: the step of another run that started this one (`action: runbook`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<String>,
    },
    /// A later process took the run over (`lifeboat resume`).
    RunResumed {
        operator: String,
        host: String,
        pid: u32,
        #[serde(default)]
        yes: bool,
    },
    /// `lifeboat abort`: `by` ended the run on purpose (`reason`), rolling it back when
    /// `rollback`. `run_finished` with status `aborted` follows (after the rollback).
    RunAborted {
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        rollback: bool,
        host: String,
        pid: u32,
    },
    /// A lock was taken from a run whose process is verifiably gone.
    LockTakenOver {
        lock: String,
        from_run: String,
        from_pid: u32,
    },
    StepStarted {
        step: String,
        attempt: u32,
        attempt_key: String,
        action: String,
        /// The rendered `with`; values computed from secrets are `***`.
        inputs: Value,
    },
    StepAttemptFailed {
        step: String,
        attempt: u32,
        error: String,
        transient: bool,
        /// When another attempt follows, after how long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
        elapsed_ms: u64,
    },
    /// Where a long attempt stands ("2 of 3 updated, 1 available"), emitted when it changes.
    StepProgress {
        step: String,
        attempt: u32,
        message: String,
    },
    /// A fact an attempt must not lose to a crash, durable before the change it protects starts
    /// (the records a DNS change replaces). Later attempts of the step, in this process or after
    /// `resume`, read it back instead of reading a world the first attempt already changed.
    StepNoted {
        step: String,
        attempt: u32,
        /// Whether the step's `compensate` noted it (its notes are kept apart from the step's).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        compensation: bool,
        key: String,
        value: Value,
    },
    StepSucceeded {
        step: String,
        attempt: u32,
        outputs: Value,
        elapsed_ms: u64,
    },
    StepFailed {
        step: String,
        attempt: u32,
        error: String,
        elapsed_ms: u64,
        /// `on_failure: continue`: the run goes on without this step.
        #[serde(default)]
        continued: bool,
    },
    StepSkipped {
        step: String,
        reason: String,
        /// The step it needed that did not succeed; absent when its own `when` was false.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        need: Option<String>,
    },
    /// A started attempt whose end was not recorded: the process was killed, or the run was
    /// cancelled. Whether its effect happened is unknown.
    StepInterrupted {
        step: String,
        attempt: u32,
        reason: String,
    },
    ApprovalRequested {
        step: String,
        message: String,
        /// What runs once this is approved.
        next: Vec<String>,
        /// Set when the "approval" is to run again a step that was interrupted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rerun: Option<String>,
    },
    ApprovalGranted {
        step: String,
        by: String,
        via: ApprovalVia,
    },
    ApprovalDenied {
        step: String,
        by: String,
    },
    RollbackStarted {
        reason: String,
        /// Steps whose `compensate` will run, in that order.
        steps: Vec<String>,
    },
    CompensationStarted {
        step: String,
        attempt: u32,
        attempt_key: String,
        action: String,
        inputs: Value,
    },
    CompensationAttemptFailed {
        step: String,
        attempt: u32,
        error: String,
        transient: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
        elapsed_ms: u64,
    },
    CompensationSucceeded {
        step: String,
        attempt: u32,
        outputs: Value,
        elapsed_ms: u64,
    },
    CompensationFailed {
        step: String,
        attempt: u32,
        error: String,
        elapsed_ms: u64,
    },
    RollbackFinished {
        compensated: Vec<String>,
        failed: Vec<String>,
    },
    /// The run ended (`status`, in `summary`'s words): its `on_failure` steps (when it failed)
    /// and `finally` steps start, `steps` of them, afresh. `run_finished` follows them.
    HandlersStarted {
        status: RunStatus,
        summary: String,
        /// The step whose failure ended the run, and its error: `run.failed_step`, `run.error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed_step: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        steps: Vec<String>,
    },
    RunFinished {
        status: RunStatus,
        /// In words, for people: why it failed, what it waits for.
        summary: String,
        /// Steps waiting for an approval (status `waiting_for_approval`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        waiting: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalVia {
    /// Answered at the terminal prompt.
    Prompt,
    /// `lifeboat approve RUN STEP`.
    Command,
    /// `--yes`: nobody was asked.
    YesFlag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    WaitingForApproval,
    Interrupted,
    /// Ended on purpose by `lifeboat abort`; it cannot be resumed.
    Aborted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::WaitingForApproval => "waiting_for_approval",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Aborted => "aborted",
        }
    }

    pub fn exit(self) -> crate::exit::Exit {
        use crate::exit::Exit;
        match self {
            RunStatus::Succeeded => Exit::Success,
            RunStatus::Failed | RunStatus::Running => Exit::Failed,
            RunStatus::WaitingForApproval => Exit::WaitingForApproval,
            RunStatus::Interrupted => Exit::Interrupted,
            // `lifeboat abort` did what it was asked.
            RunStatus::Aborted => Exit::Success,
        }
    }
}

/// The fields that say what a run is: ids and names from the runbook and the command line,
/// enum words, numbers. The masker never touches them, so a secret that happens to equal one (a
/// step id, `failed`, `step_started`) cannot change what the log means.
pub const STRUCTURE: &[&str] = &[
    "event",
    "run",
    "runbook",
    "version",
    "file",
    "file_sha256",
    "host",
    "pid",
    "lifeboat",
    "locks",
    "max_parallel",
    "timeout_ms",
    "yes",
    "drill",
    "lock",
    "from_run",
    "from_pid",
    "step",
    "attempt",
    "attempt_key",
    "action",
    "transient",
    "retry_in_ms",
    "elapsed_ms",
    "compensation",
    "key",
    "continued",
    "need",
    "next",
    "steps",
    "compensated",
    "failed",
    "status",
    "waiting",
    "via",
    "failed_step",
    "rollback",
    "dir",
    "parent",
];

/// The fields that carry text or data a secret can reach (rendered inputs, outputs, error
/// messages, who approved): the masker scrubs these, and only these.
pub const TEXT: &[&str] = &[
    "params", "operator", "inputs", "error", "message", "value", "outputs", "reason", "rerun",
    "by", "summary",
];

impl Event {
    /// The JSON object written to the log.
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self).expect("events serialize") {
            Value::Object(m) => m,
            _ => unreachable!("an internally tagged enum serializes to an object"),
        }
    }

    /// The step an event is about, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Event::StepStarted { step, .. }
            | Event::StepAttemptFailed { step, .. }
            | Event::StepProgress { step, .. }
            | Event::StepNoted { step, .. }
            | Event::StepSucceeded { step, .. }
            | Event::StepFailed { step, .. }
            | Event::StepSkipped { step, .. }
            | Event::StepInterrupted { step, .. }
            | Event::ApprovalRequested { step, .. }
            | Event::ApprovalGranted { step, .. }
            | Event::ApprovalDenied { step, .. }
            | Event::CompensationStarted { step, .. }
            | Event::CompensationAttemptFailed { step, .. }
            | Event::CompensationSucceeded { step, .. }
            | Event::CompensationFailed { step, .. } => Some(step),
            Event::RunStarted { .. }
            | Event::RunResumed { .. }
            | Event::RunAborted { .. }
            | Event::LockTakenOver { .. }
            | Event::RollbackStarted { .. }
            | Event::RollbackFinished { .. }
            | Event::HandlersStarted { .. }
            | Event::RunFinished { .. } => None,
        }
    }
}

/// An event as read back from a log line.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub seq: u64,
    pub ts: String,
    pub event: Event,
}

/// Reads a log's events. The chain is not checked here (that is `runlog::verify`); a line that is
/// not a known event is an error naming its line.
pub fn parse_log(text: &str) -> Result<Vec<Recorded>, String> {
    #[derive(Deserialize)]
    struct Envelope {
        seq: u64,
        ts: String,
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let env: Envelope = serde_json::from_str(line)
            .map_err(|e| format!("line {}: not a run log line: {e}", i + 1))?;
        let event: Event = serde_json::from_str(line)
            .map_err(|e| format!("line {}: not an event this lifeboat knows: {e}", i + 1))?;
        out.push(Recorded {
            seq: env.seq,
            ts: env.ts,
            event,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// One of each event, every optional field set.
    fn samples() -> Vec<Event> {
        let step = |event: &str, more: Value| {
            let mut v = json!({"event": event, "step": "s", "attempt": 1});
            v.as_object_mut()
                .unwrap()
                .extend(more.as_object().unwrap().clone());
            serde_json::from_value::<Event>(v).unwrap()
        };
        let ev = |v: Value| serde_json::from_value::<Event>(v).unwrap();
        vec![
            ev(
                json!({"event": "run_started", "run": "r", "runbook": "b", "version": "1.0.0",
                "file": "f", "file_sha256": "h", "params": {"p": 1}, "operator": "o", "host": "h",
                "pid": 1, "lifeboat": "0", "locks": ["l"], "max_parallel": 1, "timeout_ms": 5,
                "yes": true, "drill": {"scenario": "s", "description": "d", "rto_objective_ms": 1,
                "rpo_objective_ms": 1, "steady_before": [], "inject": [], "recovery": [],
                "steady_after": [], "outside_targets": ["c"]}, "dir": "/d", "parent": "r/s"}),
            ),
            ev(
                json!({"event": "run_resumed", "operator": "o", "host": "h", "pid": 1, "yes": true}),
            ),
            ev(
                json!({"event": "run_aborted", "by": "b", "reason": "r", "rollback": true, "host": "h", "pid": 1}),
            ),
            ev(json!({"event": "lock_taken_over", "lock": "l", "from_run": "r", "from_pid": 1})),
            step(
                "step_started",
                json!({"attempt_key": "k", "action": "a", "inputs": {}}),
            ),
            step(
                "step_attempt_failed",
                json!({"error": "e", "transient": true, "retry_in_ms": 1, "elapsed_ms": 1}),
            ),
            step("step_progress", json!({"message": "m"})),
            step(
                "step_noted",
                json!({"compensation": true, "key": "k", "value": 1}),
            ),
            step("step_succeeded", json!({"outputs": {}, "elapsed_ms": 1})),
            step(
                "step_failed",
                json!({"error": "e", "elapsed_ms": 1, "continued": true}),
            ),
            ev(json!({"event": "step_skipped", "step": "s", "reason": "r", "need": "n"})),
            step("step_interrupted", json!({"reason": "r"})),
            ev(
                json!({"event": "approval_requested", "step": "s", "message": "m", "next": ["n"], "rerun": "r"}),
            ),
            ev(json!({"event": "approval_granted", "step": "s", "by": "b", "via": "command"})),
            ev(json!({"event": "approval_denied", "step": "s", "by": "b"})),
            ev(json!({"event": "rollback_started", "reason": "r", "steps": ["s"]})),
            step(
                "compensation_started",
                json!({"attempt_key": "k", "action": "a", "inputs": {}}),
            ),
            step(
                "compensation_attempt_failed",
                json!({"error": "e", "transient": true, "retry_in_ms": 1, "elapsed_ms": 1}),
            ),
            step(
                "compensation_succeeded",
                json!({"outputs": {}, "elapsed_ms": 1}),
            ),
            step(
                "compensation_failed",
                json!({"error": "e", "elapsed_ms": 1}),
            ),
            ev(json!({"event": "rollback_finished", "compensated": ["s"], "failed": []})),
            ev(
                json!({"event": "handlers_started", "status": "failed", "summary": "s",
                "failed_step": "s", "error": "e", "steps": ["h"]}),
            ),
            ev(
                json!({"event": "run_finished", "status": "failed", "summary": "s", "waiting": ["w"]}),
            ),
        ]
    }

    /// Its position in `samples`; a new variant does not compile until it has a sample there.
    fn index(e: &Event) -> usize {
        match e {
            Event::RunStarted { .. } => 0,
            Event::RunResumed { .. } => 1,
            Event::RunAborted { .. } => 2,
            Event::LockTakenOver { .. } => 3,
            Event::StepStarted { .. } => 4,
            Event::StepAttemptFailed { .. } => 5,
            Event::StepProgress { .. } => 6,
            Event::StepNoted { .. } => 7,
            Event::StepSucceeded { .. } => 8,
            Event::StepFailed { .. } => 9,
            Event::StepSkipped { .. } => 10,
            Event::StepInterrupted { .. } => 11,
            Event::ApprovalRequested { .. } => 12,
            Event::ApprovalGranted { .. } => 13,
            Event::ApprovalDenied { .. } => 14,
            Event::RollbackStarted { .. } => 15,
            Event::CompensationStarted { .. } => 16,
            Event::CompensationAttemptFailed { .. } => 17,
            Event::CompensationSucceeded { .. } => 18,
            Event::CompensationFailed { .. } => 19,
            Event::RollbackFinished { .. } => 20,
            Event::HandlersStarted { .. } => 21,
            Event::RunFinished { .. } => 22,
        }
    }

    /// Every field of every event is either structure (never masked) or text (masked): a new
    /// field is classified before it ships, so masking can neither miss it nor break it.
    #[test]
    fn every_field_is_either_structure_or_text() {
        let all = samples();
        for (i, e) in all.iter().enumerate() {
            assert_eq!(index(e), i, "samples() is in index() order");
            for k in e.to_map().keys() {
                let structure = STRUCTURE.contains(&k.as_str());
                let text = TEXT.contains(&k.as_str());
                assert!(
                    structure != text,
                    "`{k}` of {:?} must be in exactly one of STRUCTURE and TEXT",
                    e.to_map()["event"]
                );
            }
        }
    }
}
