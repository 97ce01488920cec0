//! The closed set of things that happen in a run. The engine emits them; the run log stores them
//! (one per line, docs/run-log.md); reporters render them; `resume` rebuilds a run's state from them. Adding
//! a variant is a format change: docs/run-log.md lists them all.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    },
    /// A later process took the run over (`lifeboat resume`).
    RunResumed {
        operator: String,
        host: String,
        pid: u32,
        #[serde(default)]
        yes: bool,
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
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::WaitingForApproval => "waiting_for_approval",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn exit(self) -> crate::exit::Exit {
        use crate::exit::Exit;
        match self {
            RunStatus::Succeeded => Exit::Success,
            RunStatus::Failed | RunStatus::Running => Exit::Failed,
            RunStatus::WaitingForApproval => Exit::WaitingForApproval,
            RunStatus::Interrupted => Exit::Interrupted,
        }
    }
}

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
            | Event::LockTakenOver { .. }
            | Event::RollbackStarted { .. }
            | Event::RollbackFinished { .. }
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
