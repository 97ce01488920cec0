//! A run's state, folded from its events. The live engine and `resume` use this same fold, so
//! what a resumed run believes is exactly what the log says, never what a process remembered.

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{Map, Value};

use super::event::{ApprovalVia, Event, RunStatus};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running {
        attempt: u32,
    },
    /// An attempt failed and another will follow.
    Retrying {
        attempt: u32,
    },
    Succeeded {
        attempt: u32,
    },
    Failed {
        continued: bool,
    },
    Skipped {
        reason: String,
        need: Option<String>,
    },
    /// An approval gate that has been asked and not answered.
    WaitingApproval,
    /// Started, end unknown.
    Interrupted {
        attempt: u32,
    },
    /// Succeeded, then undone by its `compensate`.
    Compensated,
}

#[derive(Debug, Clone, Serialize)]
pub struct Grant {
    pub by: String,
    pub via: ApprovalVia,
    pub ts: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub state: StepState,
    /// The highest attempt number started; attempt numbers keep counting across resumes.
    pub attempts: u32,
    pub first_started: Option<String>,
    pub finished: Option<String>,
    pub elapsed_ms: Option<u64>,
    pub last_error: Option<String>,
    pub outputs: Option<Value>,
    /// Position among completed steps; rollback runs in reverse of it.
    pub completed_order: Option<u64>,
    pub compensation: Option<CompensationRecord>,
    /// An approval not yet used: for an approval gate, or to run an interrupted step again.
    pub grant: Option<Grant>,
    /// What attempts noted (`step_noted`), by key; a compensation's keys start `compensate/`.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub notes: IndexMap<String, Value>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CompensationRecord {
    Running { attempt: u32 },
    Succeeded,
    Failed { error: String },
}

/// How the run ended, as its `on_failure` and `finally` steps see it.
#[derive(Debug, Clone, Serialize)]
pub struct Handlers {
    pub status: RunStatus,
    pub summary: String,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    pub steps: Vec<String>,
    /// `run_finished` recorded the end after them; until then a resume finishes them.
    pub done: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunState {
    pub run: String,
    pub runbook: String,
    pub version: String,
    pub file: String,
    pub file_sha256: String,
    /// The runbook file's folder, when the run recorded it (`action: runbook` finds files there).
    pub dir: Option<String>,
    /// `RUN/STEP` that started this run, for a child run.
    pub parent: Option<String>,
    pub params: Map<String, Value>,
    pub operator: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: RunStatus,
    pub summary: Option<String>,
    pub yes: bool,
    pub max_parallel: usize,
    pub timeout_ms: Option<u64>,
    pub steps: IndexMap<String, StepRecord>,
    /// `Some(false)` while a rollback is under way, `Some(true)` once it finished.
    pub rollback: Option<bool>,
    pub rollback_steps: Vec<String>,
    /// A step failed, and was not let continue, since the run last (re)started: nothing new
    /// may start. Decided here, under the log's lock, so no step can start after a failure is
    /// recorded, whichever task records it first.
    pub halted: bool,
    /// The run ended and its `on_failure`/`finally` steps were started (`handlers_started`).
    pub handlers: Option<Handlers>,
    /// `lifeboat abort` began ending the run (`run_aborted`): with its rollback when `true`. A
    /// resume of a run whose abort was cut short finishes the abort.
    pub aborting: Option<(bool, Option<String>)>,
    pub last_seq: u64,
    completions: u64,
}

impl RunState {
    /// An empty state for the steps of a runbook, before `run_started`.
    pub fn new<'a>(steps: impl IntoIterator<Item = &'a str>) -> RunState {
        RunState {
            run: String::new(),
            runbook: String::new(),
            version: String::new(),
            file: String::new(),
            file_sha256: String::new(),
            dir: None,
            parent: None,
            params: Map::new(),
            operator: String::new(),
            started_at: String::new(),
            finished_at: None,
            status: RunStatus::Running,
            summary: None,
            yes: false,
            max_parallel: 0,
            timeout_ms: None,
            steps: steps
                .into_iter()
                .map(|s| {
                    (
                        s.to_string(),
                        StepRecord {
                            state: StepState::Pending,
                            attempts: 0,
                            first_started: None,
                            finished: None,
                            elapsed_ms: None,
                            last_error: None,
                            outputs: None,
                            completed_order: None,
                            compensation: None,
                            grant: None,
                            notes: IndexMap::new(),
                        },
                    )
                })
                .collect(),
            rollback: None,
            rollback_steps: Vec::new(),
            halted: false,
            handlers: None,
            aborting: None,
            last_seq: 0,
            completions: 0,
        }
    }

    fn step(&mut self, id: &str) -> Option<&mut StepRecord> {
        self.steps.get_mut(id)
    }

    pub fn apply(&mut self, seq: u64, ts: &str, event: &Event) {
        self.last_seq = seq;
        match event {
            Event::RunStarted {
                run,
                runbook,
                version,
                file,
                file_sha256,
                params,
                operator,
                yes,
                max_parallel,
                timeout_ms,
                dir,
                parent,
                ..
            } => {
                self.dir = dir.clone();
                self.parent = parent.clone();
                self.run = run.clone();
                self.runbook = runbook.clone();
                self.version = version.clone();
                self.file = file.clone();
                self.file_sha256 = file_sha256.clone();
                self.params = params.clone();
                self.operator = operator.clone();
                self.started_at = ts.to_string();
                self.yes = *yes;
                self.max_parallel = *max_parallel;
                self.timeout_ms = *timeout_ms;
                self.status = RunStatus::Running;
            }
            Event::RunResumed { yes, .. } => {
                self.status = RunStatus::Running;
                self.finished_at = None;
                self.summary = None;
                self.yes = *yes;
                self.halted = false;
                // A run whose ending steps were cut short finishes them, and nothing else.
                if let Some(h) = self.handlers.as_ref().filter(|h| !h.done) {
                    for id in &h.steps {
                        if let Some(s) = self.steps.get_mut(id)
                            && matches!(s.state, StepState::Retrying { .. })
                        {
                            s.state = StepState::Pending;
                        }
                    }
                    return;
                }
                self.handlers = None;
                // A resumed run continues a cut-short rollback; otherwise it tries again what did
                // not succeed, and what was undone.
                if self.rollback != Some(false) {
                    self.rollback = None;
                    self.rollback_steps.clear();
                    for s in self.steps.values_mut() {
                        let again = match &s.state {
                            StepState::Failed { .. }
                            | StepState::Compensated
                            | StepState::Retrying { .. }
                            | StepState::WaitingApproval => true,
                            StepState::Skipped { need, .. } => need.is_some(),
                            _ => false,
                        };
                        if again {
                            s.state = StepState::Pending;
                            s.compensation = None;
                        }
                    }
                }
            }
            // Nothing new starts; the rollback, when asked for, and `run_finished` follow.
            Event::RunAborted {
                rollback, reason, ..
            } => {
                self.halted = true;
                self.aborting = Some((*rollback, reason.clone()));
            }
            Event::LockTakenOver { .. } | Event::StepProgress { .. } => {}
            Event::StepStarted { step, attempt, .. } => {
                if let Some(s) = self.step(step) {
                    s.state = StepState::Running { attempt: *attempt };
                    s.attempts = s.attempts.max(*attempt);
                    s.first_started.get_or_insert_with(|| ts.to_string());
                    s.finished = None;
                    // An approval to run an interrupted step again is spent by running it.
                    s.grant = None;
                }
            }
            Event::StepAttemptFailed {
                step,
                attempt,
                error,
                ..
            } => {
                if let Some(s) = self.step(step) {
                    s.state = StepState::Retrying { attempt: *attempt };
                    s.last_error = Some(error.clone());
                }
            }
            Event::StepSucceeded {
                step,
                attempt,
                outputs,
                elapsed_ms,
            } => {
                self.completions += 1;
                let order = self.completions;
                if let Some(s) = self.step(step) {
                    s.state = StepState::Succeeded { attempt: *attempt };
                    s.outputs = Some(outputs.clone());
                    s.finished = Some(ts.to_string());
                    s.elapsed_ms = Some(*elapsed_ms);
                    s.completed_order = Some(order);
                    s.compensation = None;
                    s.first_started.get_or_insert_with(|| ts.to_string());
                }
            }
            Event::StepFailed {
                step,
                error,
                elapsed_ms,
                continued,
                ..
            } => {
                self.halted |= !*continued;
                if let Some(s) = self.step(step) {
                    s.state = StepState::Failed {
                        continued: *continued,
                    };
                    s.last_error = Some(error.clone());
                    s.finished = Some(ts.to_string());
                    s.elapsed_ms = Some(*elapsed_ms);
                }
            }
            Event::StepSkipped { step, reason, need } => {
                if let Some(s) = self.step(step) {
                    s.state = StepState::Skipped {
                        reason: reason.clone(),
                        need: need.clone(),
                    };
                    s.finished = Some(ts.to_string());
                }
            }
            Event::StepInterrupted { step, attempt, .. } => {
                if let Some(s) = self.step(step) {
                    s.state = StepState::Interrupted { attempt: *attempt };
                }
            }
            Event::ApprovalRequested { step, rerun, .. } => {
                if let Some(s) = self.step(step)
                    && rerun.is_none()
                {
                    s.state = StepState::WaitingApproval;
                }
            }
            Event::ApprovalGranted { step, by, via } => {
                if let Some(s) = self.step(step) {
                    s.grant = Some(Grant {
                        by: by.clone(),
                        via: *via,
                        ts: ts.to_string(),
                    });
                }
            }
            Event::ApprovalDenied { .. } => {}
            Event::RollbackStarted { steps, .. } => {
                self.rollback = Some(false);
                self.rollback_steps = steps.clone();
            }
            Event::CompensationStarted { step, attempt, .. } => {
                if let Some(s) = self.step(step) {
                    s.compensation = Some(CompensationRecord::Running { attempt: *attempt });
                }
            }
            Event::CompensationAttemptFailed { .. } => {}
            Event::StepNoted {
                step,
                compensation,
                key,
                value,
                ..
            } => {
                if let Some(s) = self.step(step) {
                    s.notes.insert(note_key(*compensation, key), value.clone());
                }
            }
            Event::CompensationSucceeded { step, .. } => {
                if let Some(s) = self.step(step) {
                    s.compensation = Some(CompensationRecord::Succeeded);
                    s.state = StepState::Compensated;
                    s.outputs = None;
                    // Undone: a later run of the step starts from the world as it is then.
                    s.notes.clear();
                }
            }
            Event::CompensationFailed { step, error, .. } => {
                if let Some(s) = self.step(step) {
                    s.compensation = Some(CompensationRecord::Failed {
                        error: error.clone(),
                    });
                }
            }
            Event::RollbackFinished { .. } => {
                self.rollback = Some(true);
            }
            Event::HandlersStarted {
                status,
                summary,
                failed_step,
                error,
                steps,
            } => {
                self.halted = false;
                for id in steps {
                    if let Some(s) = self.steps.get_mut(id) {
                        s.state = StepState::Pending;
                        s.outputs = None;
                        s.last_error = None;
                        s.completed_order = None;
                    }
                }
                self.handlers = Some(Handlers {
                    status: *status,
                    summary: summary.clone(),
                    failed_step: failed_step.clone(),
                    error: error.clone(),
                    steps: steps.clone(),
                    done: false,
                });
            }
            Event::RunFinished {
                status, summary, ..
            } => {
                if let Some(h) = &mut self.handlers
                    && matches!(status, RunStatus::Succeeded | RunStatus::Failed)
                {
                    h.done = true;
                }
                self.status = *status;
                self.summary = Some(summary.clone());
                self.finished_at = Some(ts.to_string());
            }
        }
    }

    /// Steps in order of completion, for the rollback.
    pub fn completed_in_order(&self) -> Vec<&str> {
        let mut done: Vec<(u64, &str)> = self
            .steps
            .iter()
            .filter(|(_, s)| matches!(s.state, StepState::Succeeded { .. }))
            .filter_map(|(id, s)| Some((s.completed_order?, id.as_str())))
            .collect();
        done.sort();
        done.into_iter().map(|(_, id)| id).collect()
    }

    /// Rebuilds a state from a log's events.
    pub fn replay<'a>(
        steps: impl IntoIterator<Item = &'a str>,
        events: &[super::event::Recorded],
    ) -> RunState {
        let mut st = RunState::new(steps);
        for r in events {
            st.apply(r.seq, &r.ts, &r.event);
        }
        st
    }
}

/// Where a note lives in [`StepRecord::notes`].
pub fn note_key(compensation: bool, key: &str) -> String {
    if compensation {
        format!("compensate/{key}")
    } else {
        key.to_string()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Events in the log's own JSON form (`step_started:a:1` style is too lossy for notes).
    fn ev(v: serde_json::Value) -> Event {
        serde_json::from_value(v).unwrap()
    }

    fn started(step: &str, attempt: u32) -> Event {
        ev(
            json!({"event": "step_started", "step": step, "attempt": attempt,
            "attempt_key": format!("r/{step}/{attempt}"), "action": "shell", "inputs": {}}),
        )
    }
    fn attempt_failed(step: &str, attempt: u32) -> Event {
        ev(
            json!({"event": "step_attempt_failed", "step": step, "attempt": attempt,
            "error": "busy", "transient": true, "retry_in_ms": 10, "elapsed_ms": 1}),
        )
    }
    fn succeeded(step: &str, attempt: u32) -> Event {
        ev(
            json!({"event": "step_succeeded", "step": step, "attempt": attempt,
            "outputs": {"n": attempt}, "elapsed_ms": 1}),
        )
    }
    fn failed(step: &str, continued: bool) -> Event {
        ev(
            json!({"event": "step_failed", "step": step, "attempt": 1, "error": "no",
            "elapsed_ms": 1, "continued": continued}),
        )
    }
    fn resumed() -> Event {
        ev(json!({"event": "run_resumed", "operator": "o", "host": "h", "pid": 1}))
    }
    fn granted(step: &str) -> Event {
        ev(json!({"event": "approval_granted", "step": step, "by": "ann", "via": "command"}))
    }
    fn requested(step: &str, rerun: Option<&str>) -> Event {
        let mut v =
            json!({"event": "approval_requested", "step": step, "message": "m", "next": []});
        if let Some(r) = rerun {
            v["rerun"] = r.into();
        }
        ev(v)
    }
    fn rollback_started(steps: &[&str]) -> Event {
        ev(json!({"event": "rollback_started", "reason": "r", "steps": steps}))
    }
    fn compensation(step: &str, outcome: &str) -> Event {
        match outcome {
            "started" => ev(
                json!({"event": "compensation_started", "step": step, "attempt": 1,
                "attempt_key": "k", "action": "shell", "inputs": {}}),
            ),
            "succeeded" => ev(json!({"event": "compensation_succeeded", "step": step,
                "attempt": 1, "outputs": {}, "elapsed_ms": 1})),
            _ => ev(
                json!({"event": "compensation_failed", "step": step, "attempt": 1,
                "error": "e", "elapsed_ms": 1}),
            ),
        }
    }
    fn noted(step: &str, compensation: bool) -> Event {
        ev(json!({"event": "step_noted", "step": step, "attempt": 1,
            "compensation": compensation, "key": "previous", "value": [1]}))
    }
    fn skipped(step: &str, need: Option<&str>) -> Event {
        ev(json!({"event": "step_skipped", "step": step, "reason": "r", "need": need}))
    }
    fn interrupted(step: &str) -> Event {
        ev(json!({"event": "step_interrupted", "step": step, "attempt": 1, "reason": "r"}))
    }

    fn fold(events: &[Event]) -> RunState {
        let mut st = RunState::new(["a", "b"]);
        for (i, e) in events.iter().enumerate() {
            st.apply(i as u64 + 1, "2026-11-30T00:00:00.000Z", e);
        }
        st
    }

    /// Each row: events, then what step `a` is after them. A resumed run rebuilds its state
    /// with this fold, so every decision `resume` makes rests on these rows.
    #[test]
    fn each_event_moves_a_step_as_the_log_says() {
        let rows: Vec<(&str, Vec<Event>, StepState)> = vec![
            (
                "started",
                vec![started("a", 1)],
                StepState::Running { attempt: 1 },
            ),
            (
                "a failed attempt that will be retried",
                vec![started("a", 1), attempt_failed("a", 1)],
                StepState::Retrying { attempt: 1 },
            ),
            (
                "succeeded on the second attempt",
                vec![
                    started("a", 1),
                    attempt_failed("a", 1),
                    started("a", 2),
                    succeeded("a", 2),
                ],
                StepState::Succeeded { attempt: 2 },
            ),
            (
                "failed",
                vec![started("a", 1), failed("a", false)],
                StepState::Failed { continued: false },
            ),
            (
                "failed, and the run went on",
                vec![started("a", 1), failed("a", true)],
                StepState::Failed { continued: true },
            ),
            (
                "cut short",
                vec![started("a", 1), interrupted("a")],
                StepState::Interrupted { attempt: 1 },
            ),
            (
                "an approval gate asked",
                vec![requested("a", None)],
                StepState::WaitingApproval,
            ),
            (
                "asked to run a cut-short step again: still interrupted",
                vec![
                    started("a", 1),
                    interrupted("a"),
                    requested("a", Some("attempt 1")),
                ],
                StepState::Interrupted { attempt: 1 },
            ),
            (
                "resume retries what failed",
                vec![started("a", 1), failed("a", false), resumed()],
                StepState::Pending,
            ),
            (
                "resume retries what was rolled back",
                vec![
                    started("a", 1),
                    succeeded("a", 1),
                    rollback_started(&["a"]),
                    compensation("a", "started"),
                    compensation("a", "succeeded"),
                    ev(json!({"event": "rollback_finished", "compensated": ["a"], "failed": []})),
                    resumed(),
                ],
                StepState::Pending,
            ),
            (
                "resume keeps what succeeded",
                vec![started("a", 1), succeeded("a", 1), resumed()],
                StepState::Succeeded { attempt: 1 },
            ),
            (
                "resume asks again at an unanswered gate",
                vec![requested("a", None), resumed()],
                StepState::Pending,
            ),
            (
                "resume keeps a step skipped by its own `when`",
                vec![skipped("a", None), resumed()],
                StepState::Skipped {
                    reason: "r".into(),
                    need: None,
                },
            ),
            (
                "resume reconsiders a step skipped for a need",
                vec![skipped("a", Some("b")), resumed()],
                StepState::Pending,
            ),
            (
                "a rollback cut short is continued, not reset, by resume",
                vec![
                    started("a", 1),
                    failed("a", false),
                    rollback_started(&["b"]),
                    resumed(),
                ],
                StepState::Failed { continued: false },
            ),
            (
                "compensated",
                vec![
                    started("a", 1),
                    succeeded("a", 1),
                    compensation("a", "started"),
                    compensation("a", "succeeded"),
                ],
                StepState::Compensated,
            ),
            (
                "a failed compensation leaves the step as it was",
                vec![
                    started("a", 1),
                    succeeded("a", 1),
                    compensation("a", "started"),
                    compensation("a", "failed"),
                ],
                StepState::Succeeded { attempt: 1 },
            ),
        ];
        for (name, events, expected) in rows {
            assert_eq!(fold(&events).steps["a"].state, expected, "{name}");
        }
    }

    #[test]
    fn what_the_fold_keeps_besides_the_state() {
        // Attempts keep counting across resumes; a grant is spent by the attempt it allowed.
        let st = fold(&[started("a", 1), interrupted("a"), resumed(), granted("a")]);
        assert_eq!(st.steps["a"].attempts, 1);
        assert_eq!(st.steps["a"].grant.as_ref().unwrap().by, "ann");
        let st = fold(&[
            started("a", 1),
            interrupted("a"),
            granted("a"),
            started("a", 2),
        ]);
        assert!(st.steps["a"].grant.is_none());
        assert_eq!(st.steps["a"].attempts, 2);

        // Rollback order is completion order, reversed by the engine.
        let st = fold(&[
            started("b", 1),
            succeeded("b", 1),
            started("a", 1),
            succeeded("a", 1),
        ]);
        assert_eq!(st.completed_in_order(), ["b", "a"]);

        // Notes: a step's and its compensation's are apart; an undone step forgets both.
        let st = fold(&[
            started("a", 1),
            noted("a", false),
            succeeded("a", 1),
            noted("a", true),
        ]);
        let keys: Vec<&String> = st.steps["a"].notes.keys().collect();
        assert_eq!(keys, ["previous", "compensate/previous"]);
        let st = fold(&[
            started("a", 1),
            noted("a", false),
            succeeded("a", 1),
            compensation("a", "started"),
            compensation("a", "succeeded"),
        ]);
        assert!(st.steps["a"].notes.is_empty());
        assert!(st.steps["a"].outputs.is_none());

        // Rollback progress: under way until it finishes.
        let st = fold(&[rollback_started(&["a"])]);
        assert_eq!(
            (st.rollback, st.rollback_steps.clone()),
            (Some(false), vec!["a".to_string()])
        );

        // Events about steps the runbook does not have change nothing (a log is not trusted
        // to match the file beyond its hash).
        let st = fold(&[started("zzz", 1)]);
        assert!(st.steps.values().all(|s| s.state == StepState::Pending));
    }
}
