//! The run loop: start what is ready, collect what finished, stop cleanly, roll back on failure.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::context::RunScope;
use super::event::{ApprovalVia, Event, RunStatus};
use super::inputs;
use super::signals::Signals;
use super::state::{CompensationRecord, StepState};
use super::{Emitter, EngineError, Masker, Options, Prompter, Question, Runner};
use crate::actions::{Action, ActionError, Exec};
use crate::runbook::{OnFailure, OnSkippedNeeds, RetryPolicy, StepPhase, ValidRunbook};

/// One run, driven by this process.
pub(super) struct Engine {
    shared: Arc<Shared>,
}

struct Shared {
    rb: Arc<ValidRunbook>,
    emitter: Arc<Emitter>,
    scope: RunScope,
    masker: Arc<Masker>,
    env: minijinja::Environment<'static>,
    http: reqwest::Client,
    runner: Arc<dyn Runner>,
    opts: Options,
    prompter: Arc<dyn Prompter>,
    run_id: String,
    /// Who this process acts as, as the store vouches for it: the one approvals are by.
    identity: String,
    /// Gates nobody could answer in this process: left for `lifeboat approve`.
    unanswered: std::sync::Mutex<HashSet<usize>>,
    /// Steps not yet settled, in file order.
    open: std::sync::Mutex<Vec<usize>>,
    /// Settled steps with a need, at some depth, that is not: see [`upstream_undone`].
    stale: std::sync::Mutex<HashSet<usize>>,
    /// What `action: runbook` steps need of this run.
    calls: crate::actions::Calls,
    /// The settled steps of each `for_each` group, to publish the group once all are.
    group_settled: std::sync::Mutex<HashMap<String, HashSet<usize>>>,
}

impl Shared {
    /// This process's deadline for the run: `--timeout`, else the runbook's `timeout`.
    fn run_timeout(&self) -> Option<Duration> {
        self.opts.timeout.or(self.rb.timeout)
    }
}

/// Whether a step is done with for this process: its dependents may be decided.
fn settled(s: &StepState) -> bool {
    matches!(
        s,
        StepState::Succeeded { .. }
            | StepState::Failed { .. }
            | StepState::Skipped { .. }
            | StepState::Compensated
    )
}

/// The steps that are settled while something upstream of them is not. Only a resumed run has
/// any: a rollback undid `copy`, `check` after it succeeded and has nothing to undo, and `copy`
/// is to be done again. Until it is, `check` vouches for nothing, and its dependents wait.
fn upstream_undone(rb: &ValidRunbook, st: &super::RunState) -> HashSet<usize> {
    let n = rb.steps.len();
    let mut waiting: Vec<usize> = rb.steps.iter().map(|s| s.needs.len()).collect();
    let mut dependents = vec![Vec::new(); n];
    for (i, step) in rb.steps.iter().enumerate() {
        for &need in &step.needs {
            dependents[need].push(i);
        }
    }
    // In dependency order (the graph is acyclic), so each step's needs are decided first.
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut done = vec![false; n];
    let mut stale = HashSet::new();
    while let Some(i) = ready.pop() {
        let settled_here = settled(&st.steps[i].state);
        done[i] = settled_here && rb.steps[i].needs.iter().all(|&need| done[need]);
        if settled_here && !done[i] {
            stale.insert(i);
        }
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(d);
            }
        }
    }
    stale
}

/// How one step's attempts ended.
enum Outcome {
    Succeeded,
    Failed,
    /// Never started: another step failed first.
    NotStarted,
}

/// What a task of the run loop reports.
enum Done {
    Step(usize, Result<Outcome, EngineError>),
    Answer(usize, Option<bool>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Failure,
    Signal,
    Timeout,
}

/// What an engine is made of; see [`super::Session`], which builds it.
pub(super) struct Setup {
    pub rb: Arc<ValidRunbook>,
    pub emitter: Arc<Emitter>,
    pub scope: RunScope,
    pub masker: Arc<Masker>,
    pub http: reqwest::Client,
    pub runner: Arc<dyn Runner>,
    pub opts: Options,
    pub prompter: Arc<dyn Prompter>,
    pub run_id: String,
    pub identity: String,
    pub calls: crate::actions::Calls,
}

impl Engine {
    pub(super) fn new(s: Setup) -> Engine {
        let n = s.rb.main_len();
        Engine {
            shared: Arc::new(Shared {
                rb: s.rb,
                emitter: s.emitter,
                scope: s.scope,
                masker: s.masker,
                env: crate::runbook::templates::environment(),
                http: s.http,
                runner: s.runner,
                opts: s.opts,
                prompter: s.prompter,
                run_id: s.run_id,
                identity: s.identity,
                unanswered: Default::default(),
                open: std::sync::Mutex::new((0..n).collect()),
                stale: Default::default(),
                group_settled: Default::default(),
                calls: s.calls,
            }),
        }
    }

    /// Drives the run until it succeeds, fails (after its rollback), waits, or is interrupted.
    pub(super) async fn drive(&self, signals: &mut dyn Signals) -> Result<RunStatus, EngineError> {
        let sh = &self.shared;
        // Outputs of steps that finished before this process (resume) are visible to templates.
        for i in 0..sh.rb.main_len() {
            publish(sh, i);
        }
        if sh
            .emitter
            .state()
            .handlers
            .as_ref()
            .is_some_and(|h| !h.done)
        {
            // The run had ended, and its `on_failure`/`finally` steps were cut short.
            return self.handle(signals).await;
        }
        *sh.stale.lock().expect("stale lock") = upstream_undone(&sh.rb, &sh.emitter.state());
        if sh.emitter.state().rollback == Some(false) {
            // A rollback was cut short: finish it, and the run stays failed.
            let why = "continuing the rollback cut short by a crash";
            let rolled = self.rollback(why).await?;
            return self
                .end(RunStatus::Failed, format!("{why}{rolled}"), why, signals)
                .await;
        }

        let mut tasks: JoinSet<Done> = JoinSet::new();
        let mut running: HashMap<usize, AbortHandle> = HashMap::new();
        let mut asking: HashMap<usize, AbortHandle> = HashMap::new();
        let mut stop: Option<Stop> = None;
        let mut failure: Option<String> = None;
        let deadline = sh.run_timeout().map(|t| tokio::time::Instant::now() + t);
        let mut grace_end: Option<tokio::time::Instant> = None;

        loop {
            if stop.is_none()
                && let Some(why) = self
                    .start_ready(&mut tasks, &mut running, &mut asking)
                    .await?
            {
                stop = Some(Stop::Failure);
                failure = Some(why);
            }
            if running.is_empty() && (asking.is_empty() || stop.is_some()) {
                break;
            }
            let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
            tokio::select! {
                done = tasks.join_next() => {
                    let Some(done) = done else { continue };
                    match done {
                        Ok(Done::Step(i, result)) => {
                            running.remove(&i);
                            if let Outcome::Failed = result? {
                                let st = sh.emitter.state();
                                let rec = &st.steps[i];
                                if rec.state == (StepState::Failed { continued: false }) && stop.is_none() {
                                    stop = Some(Stop::Failure);
                                    failure = Some(format!("step `{}` failed: {}", sh.rb.steps[i].id, rec.last_error.clone().unwrap_or_default()));
                                }
                            }
                        }
                        Ok(Done::Answer(i, answer)) => {
                            asking.remove(&i);
                            self.answered(i, answer)?;
                            if let Some(false) = answer
                                && stop.is_none()
                            {
                                stop = Some(Stop::Failure);
                                failure = Some(format!("the operator declined `{}`", sh.rb.steps[i].id));
                            }
                        }
                        // Cancelled tasks were recorded when they were cancelled.
                        Err(e) if e.is_cancelled() => {}
                        Err(e) => return Err(EngineError::Log(format!("a step task crashed: {e}"))),
                    }
                }
                sig = signals.recv() => {
                    if stop == Some(Stop::Signal) || grace_end.is_some() {
                        self.cancel(&mut tasks, &mut running, &mut asking, &format!("cancelled by a second {sig}")).await?;
                    } else {
                        stop = Some(Stop::Signal);
                        failure = Some(format!("interrupted by {sig}"));
                        grace_end = Some(tokio::time::Instant::now() + sh.opts.grace);
                        for (_, h) in asking.drain() {
                            h.abort();
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && stop != Some(Stop::Timeout) => {
                    let t = crate::runbook::duration::format(sh.run_timeout().unwrap_or_default());
                    stop = Some(Stop::Timeout);
                    failure = Some(format!("the run's timeout of {t} passed"));
                    self.cancel(&mut tasks, &mut running, &mut asking, &format!("the run's timeout of {t} passed")).await?;
                }
                _ = tokio::time::sleep_until(grace_end.unwrap_or(far)), if grace_end.is_some() && !running.is_empty() => {
                    self.cancel(&mut tasks, &mut running, &mut asking, "still running when the grace period after the interrupt ended").await?;
                }
            }
        }

        match stop {
            Some(Stop::Signal) => {
                let summary = failure.unwrap_or_default() + "; `lifeboat resume` continues it";
                self.finish(RunStatus::Interrupted, summary, vec![]).await
            }
            Some(Stop::Failure) | Some(Stop::Timeout) => {
                let why = failure.unwrap_or_else(|| "a step failed".into());
                let rolled = self.rollback(&why).await?;
                self.end(RunStatus::Failed, format!("{why}{rolled}"), &why, signals)
                    .await
            }
            None => {
                let (waiting, failed_continued, total) = {
                    let st = sh.emitter.state();
                    let unanswered = sh.unanswered.lock().expect("unanswered lock");
                    let waiting: Vec<String> = st
                        .steps
                        .iter()
                        .enumerate()
                        .filter(|(i, (_, r))| {
                            unanswered.contains(i)
                                || matches!(
                                    r.state,
                                    StepState::WaitingApproval | StepState::Interrupted { .. }
                                )
                        })
                        .map(|(_, (id, _))| id.clone())
                        .collect();
                    let main = sh.rb.main_len();
                    let failed = st
                        .steps
                        .values()
                        .take(main)
                        .filter(|r| matches!(r.state, StepState::Failed { continued: true }))
                        .count();
                    (waiting, failed, main)
                };
                if !waiting.is_empty() {
                    let how: Vec<String> = waiting
                        .iter()
                        .map(|w| format!("`lifeboat approve {} {w}`", sh.run_id))
                        .collect();
                    let summary = format!(
                        "waiting for approval of {}; approve with {}, then `lifeboat resume {}`",
                        waiting
                            .iter()
                            .map(|w| format!("`{w}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        how.join(" and "),
                        sh.run_id
                    );
                    self.finish(RunStatus::WaitingForApproval, summary, waiting)
                        .await
                } else {
                    let summary = if failed_continued > 0 {
                        format!(
                            "{total} steps done; {failed_continued} failed and the run went on (on_failure: continue)"
                        )
                    } else {
                        format!("{total} steps done")
                    };
                    self.end(RunStatus::Succeeded, summary, "", signals).await
                }
            }
        }
    }

    /// Ends the run for good (`lifeboat abort`, after `run_aborted`): its rollback when asked,
    /// then `run_finished` with status `aborted`.
    pub(super) async fn abort(&self, a: &super::session::Abort) -> Result<RunStatus, EngineError> {
        let sh = &self.shared;
        let mut summary = format!("aborted by {}", sh.identity);
        if let Some(r) = &a.reason {
            summary.push_str(&format!(": {r}"));
        }
        if a.rollback {
            let rolled = self.rollback(&summary).await?;
            summary.push_str(if rolled.is_empty() {
                "; nothing to roll back"
            } else {
                &rolled
            });
        }
        self.finish(RunStatus::Aborted, summary, vec![]).await
    }

    /// The run ended as `status`: records that, runs its `on_failure` steps (when it failed)
    /// and `finally` steps, and finishes it. `why` is the failure in words, for `run.error` when
    /// no step's failure ended the run (a timeout, say).
    async fn end(
        &self,
        status: RunStatus,
        summary: String,
        why: &str,
        signals: &mut dyn Signals,
    ) -> Result<RunStatus, EngineError> {
        let sh = &self.shared;
        let steps: Vec<String> = sh.rb.steps[sh.rb.main_len()..]
            .iter()
            .filter(|s| status == RunStatus::Failed || s.phase == StepPhase::Finally)
            .map(|s| s.id.clone())
            .collect();
        if steps.is_empty() {
            return self.finish(status, summary, vec![]).await;
        }
        let (failed_step, error) = if status == RunStatus::Failed {
            let st = sh.emitter.state();
            match first_failure(&sh.rb, &st) {
                Some((id, e)) => (Some(id), Some(e)),
                None => (None, Some(why.to_string())),
            }
        } else {
            (None, None)
        };
        sh.emitter
            .emit_durable(Event::HandlersStarted {
                status,
                summary,
                failed_step,
                error,
                steps,
            })
            .await?;
        self.handle(signals).await
    }

    /// Runs the `on_failure` and `finally` steps `handlers_started` named, those of
    /// `on_failure` first, and finishes the run. A failure among them is reported beside the
    /// run's own, never instead of it, and does not stop the others (only what needs it).
    async fn handle(&self, signals: &mut dyn Signals) -> Result<RunStatus, EngineError> {
        let sh = &self.shared;
        let Some(h) = sh.emitter.state().handlers.clone() else {
            return Err(EngineError::Log("no `handlers_started` to continue".into()));
        };
        sh.scope.set_ending(
            h.status.as_str(),
            h.failed_step.as_deref(),
            h.error.as_deref(),
        );
        let main = sh.rb.main_len();
        for i in 0..main {
            publish_ending(sh, i);
        }
        for group in sh.rb.groups.keys() {
            publish_group(sh, group);
        }
        let indices: Vec<usize> = h
            .steps
            .iter()
            .filter_map(|id| sh.rb.step_index(id))
            .collect();
        for &i in &indices {
            sh.scope.steps.remove(&sh.rb.steps[i].id);
            publish(sh, i);
        }
        for phase in [StepPhase::OnFailure, StepPhase::Finally] {
            let list: Vec<usize> = indices
                .iter()
                .copied()
                .filter(|&i| sh.rb.steps[i].phase == phase)
                .collect();
            if self.run_list(list, signals).await? {
                let summary = format!(
                    "{}; interrupted while running its `on_failure`/`finally` steps; `lifeboat resume {}` finishes them",
                    h.summary, sh.run_id
                );
                return self.finish(RunStatus::Interrupted, summary, vec![]).await;
            }
        }
        let (waiting, failed) = {
            let st = sh.emitter.state();
            let unanswered = sh.unanswered.lock().expect("unanswered lock");
            let waiting: Vec<String> = indices
                .iter()
                .filter(|i| unanswered.contains(i))
                .map(|&i| sh.rb.steps[i].id.clone())
                .collect();
            let failed: Vec<String> = indices
                .iter()
                .filter_map(|&i| {
                    let rec = &st.steps[i];
                    matches!(rec.state, StepState::Failed { .. }).then(|| {
                        format!(
                            "`{}` failed: {}",
                            sh.rb.steps[i].id,
                            rec.last_error.as_deref().unwrap_or_default()
                        )
                    })
                })
                .collect();
            (waiting, failed)
        };
        if !waiting.is_empty() {
            let summary = format!(
                "{}; its `on_failure`/`finally` step {} was cut short earlier and waits for `lifeboat approve {} {}` before it runs again",
                h.summary,
                waiting.join(", "),
                sh.run_id,
                waiting[0]
            );
            return self
                .finish(RunStatus::WaitingForApproval, summary, waiting)
                .await;
        }
        if failed.is_empty() {
            return self.finish(h.status, h.summary, vec![]).await;
        }
        let summary = format!("{}; after it, {}", h.summary, failed.join("; "));
        self.finish(RunStatus::Failed, summary, vec![]).await
    }

    /// Runs one ending list to its end. Returns whether a signal stopped it.
    async fn run_list(
        &self,
        list: Vec<usize>,
        signals: &mut dyn Signals,
    ) -> Result<bool, EngineError> {
        let sh = &self.shared;
        *sh.open.lock().expect("open lock") = list;
        let mut tasks: JoinSet<Done> = JoinSet::new();
        let mut running: HashMap<usize, AbortHandle> = HashMap::new();
        let mut asking: HashMap<usize, AbortHandle> = HashMap::new();
        let mut stopping = false;
        let mut grace_end: Option<tokio::time::Instant> = None;
        loop {
            // A step whose `when` failed to evaluate is recorded failed; the others go on.
            while !stopping
                && self
                    .start_ready(&mut tasks, &mut running, &mut asking)
                    .await?
                    .is_some()
            {}
            if running.is_empty() && (asking.is_empty() || stopping) {
                return Ok(stopping);
            }
            let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
            tokio::select! {
                done = tasks.join_next() => match done {
                    Some(Ok(Done::Step(i, result))) => {
                        running.remove(&i);
                        result?;
                    }
                    Some(Ok(Done::Answer(i, answer))) => {
                        asking.remove(&i);
                        self.answered(i, answer)?;
                    }
                    Some(Err(e)) if e.is_cancelled() => {}
                    Some(Err(e)) => return Err(EngineError::Log(format!("a step task crashed: {e}"))),
                    None => {}
                },
                sig = signals.recv() => {
                    if stopping {
                        self.cancel(&mut tasks, &mut running, &mut asking, &format!("cancelled by a second {sig}")).await?;
                    } else {
                        stopping = true;
                        grace_end = Some(tokio::time::Instant::now() + sh.opts.grace);
                        for (_, h) in asking.drain() {
                            h.abort();
                        }
                    }
                }
                _ = tokio::time::sleep_until(grace_end.unwrap_or(far)), if grace_end.is_some() && !running.is_empty() => {
                    self.cancel(&mut tasks, &mut running, &mut asking, "still running when the grace period after the interrupt ended").await?;
                }
            }
        }
    }

    async fn finish(
        &self,
        status: RunStatus,
        summary: String,
        waiting: Vec<String>,
    ) -> Result<RunStatus, EngineError> {
        self.shared
            .emitter
            .emit_durable(Event::RunFinished {
                status,
                summary,
                waiting,
            })
            .await?;
        Ok(status)
    }

    /// Starts every step that can start; decides skips and gates on the way. Repeats until
    /// nothing changes, since a skip can make its dependents decidable. Returns why the run must
    /// stop, when a step failed without running (its `when` could not be evaluated).
    async fn start_ready(
        &self,
        tasks: &mut JoinSet<Done>,
        running: &mut HashMap<usize, AbortHandle>,
        asking: &mut HashMap<usize, AbortHandle>,
    ) -> Result<Option<String>, EngineError> {
        let sh = &self.shared;
        loop {
            let mut changed = false;
            // One pass over the steps not yet settled, under one lock: the steps whose needs
            // are all settled. Settled steps leave `open` for good, so a long chain does not
            // rescan its finished head at every step.
            let candidates: Vec<usize> = {
                let st = sh.emitter.state();
                let unanswered = sh.unanswered.lock().expect("unanswered lock");
                let mut open = sh.open.lock().expect("open lock");
                let mut stale = sh.stale.lock().expect("stale lock");
                open.retain(|&i| !settled(&st.steps[i].state));
                if !stale.is_empty() {
                    *stale = upstream_undone(&sh.rb, &st);
                }
                // Needs first: in a long chain nearly every open step fails this cheap test.
                open.iter()
                    .copied()
                    .filter(|&i| {
                        sh.rb.steps[i]
                            .needs
                            .iter()
                            .all(|&n| settled(&st.steps[n].state) && !stale.contains(&n))
                    })
                    .filter(|i| {
                        !running.contains_key(i)
                            && !asking.contains_key(i)
                            && !unanswered.contains(i)
                    })
                    .collect()
            };
            for i in candidates {
                let step = &sh.rb.steps[i];
                let (state, grant, attempts) = {
                    let st = sh.emitter.state();
                    let rec = &st.steps[i];
                    (rec.state.clone(), rec.grant.clone(), rec.attempts)
                };
                let is_gate = matches!(step.action, Action::Approval(_));
                let interrupted = matches!(state, StepState::Interrupted { .. });
                if !matches!(state, StepState::Pending | StepState::WaitingApproval) && !interrupted
                {
                    continue;
                }
                // Needs: all done, or a reason to skip.
                let mut blocked = false;
                let mut skip_for: Option<(String, &str)> = None;
                {
                    let st = sh.emitter.state();
                    for &n in &step.needs {
                        // A need whose task has not returned yet may be recorded as succeeded
                        // before its outputs are published to templates: wait for the task.
                        if running.contains_key(&n) {
                            blocked = true;
                            continue;
                        }
                        match &st.steps[n].state {
                            StepState::Succeeded { .. } | StepState::Failed { continued: true } => {
                            }
                            StepState::Skipped { .. }
                                if step.on_skipped_needs == OnSkippedNeeds::Run => {}
                            StepState::Skipped { .. } => {
                                skip_for
                                    .get_or_insert_with(|| (sh.rb.steps[n].id.clone(), "skipped"));
                            }
                            // Only an ending step meets a need that failed: the run goes on
                            // after it, without what needed it.
                            StepState::Failed { continued: false }
                                if step.phase != StepPhase::Main =>
                            {
                                skip_for
                                    .get_or_insert_with(|| (sh.rb.steps[n].id.clone(), "failed"));
                            }
                            _ => blocked = true,
                        }
                    }
                }
                if blocked {
                    continue;
                }
                if let Some((need, how)) = skip_for {
                    sh.emitter.emit(Event::StepSkipped {
                        step: step.id.clone(),
                        reason: format!("needs `{need}`, which {how}"),
                        need: Some(need),
                    })?;
                    self.publish(i);
                    changed = true;
                    continue;
                }
                // `when` is decided once, when the step first becomes ready.
                if !interrupted
                    && attempts == 0
                    && let Some(when) = &step.when
                {
                    match self.eval(when, step.member.as_ref().map(|m| &m.item)) {
                        Ok(true) => {}
                        Ok(false) => {
                            sh.emitter.emit(Event::StepSkipped {
                                step: step.id.clone(),
                                reason: format!("`when: {when}` is false"),
                                need: None,
                            })?;
                            self.publish(i);
                            changed = true;
                            continue;
                        }
                        Err(e) => {
                            let error = format!("`when` fails to evaluate: {e}");
                            sh.emitter.emit(Event::StepFailed {
                                step: step.id.clone(),
                                attempt: 0,
                                error: error.clone(),
                                elapsed_ms: 0,
                                continued: step.on_failure == OnFailure::Continue,
                            })?;
                            self.publish(i);
                            changed = true;
                            if step.on_failure == OnFailure::Abort {
                                return Ok(Some(format!("step `{}` failed: {error}", step.id)));
                            }
                            continue;
                        }
                    }
                }
                // A gate: an approval step, or a step cut short whose effect is unknown.
                let needs_answer = is_gate || (interrupted && !step.action.idempotent());
                let approvers = match &step.action {
                    Action::Approval(a) => a.approvers.as_slice(),
                    _ => &[],
                };
                // A gate that names approvers takes only an approval by one of them, whatever
                // the log holds (one written before this rule, or by hand).
                let grant = grant.filter(|g| approvers.is_empty() || approvers.contains(&g.by));
                if needs_answer && grant.is_none() {
                    let next = self.dependents(i);
                    let (message, rerun) = match (&step.action, interrupted) {
                        (Action::Approval(a), _) => (
                            self.gate_message(i).unwrap_or_else(|| a.message.clone()),
                            None,
                        ),
                        (_, _) => (
                            format!(
                                "Step `{}` was cut short while running; it may or may not have taken effect. Run it again?",
                                step.id
                            ),
                            Some(format!("attempt {attempts} was interrupted")),
                        ),
                    };
                    let already_asked = state == StepState::WaitingApproval;
                    if !already_asked || sh.opts.yes {
                        sh.emitter.emit(Event::ApprovalRequested {
                            step: step.id.clone(),
                            message: message.clone(),
                            next: next.clone(),
                            rerun,
                        })?;
                    }
                    if sh.opts.yes && approvers.is_empty() {
                        sh.emitter.emit(Event::ApprovalGranted {
                            step: step.id.clone(),
                            by: sh.identity.clone(),
                            via: ApprovalVia::YesFlag,
                        })?;
                        changed = true;
                    } else if !approvers.is_empty() && !approvers.contains(&sh.identity) {
                        // Nobody here may answer: `--yes` never passes such a gate, and the
                        // person at this terminal is not one of its approvers.
                        sh.unanswered.lock().expect("unanswered lock").insert(i);
                    } else {
                        let q = Question {
                            step: step.id.clone(),
                            message,
                            next,
                        };
                        let fut = sh.prompter.ask(q);
                        let h = tasks.spawn(async move { Done::Answer(i, fut.await) });
                        asking.insert(i, h);
                    }
                    continue;
                }
                if is_gate {
                    let g = grant.expect("checked above");
                    sh.emitter.emit(Event::StepSucceeded {
                        step: step.id.clone(),
                        attempt: attempts.max(1),
                        outputs: serde_json::json!({"approved_by": g.by, "approved_at": g.ts, "via": g.via}),
                        elapsed_ms: 0,
                    })?;
                    self.publish(i);
                    changed = true;
                    continue;
                }
                if let (Some(m), Some(limit)) = (&step.member, step.max_parallel) {
                    let busy = running
                        .keys()
                        .filter(|&&j| {
                            sh.rb.steps[j]
                                .member
                                .as_ref()
                                .is_some_and(|o| o.group == m.group)
                        })
                        .count();
                    if busy >= limit as usize {
                        continue;
                    }
                }
                if running.len() >= sh.opts.max_parallel {
                    return Ok(None);
                }
                let shared = sh.clone();
                let h = tasks.spawn(async move {
                    let r = step_attempts(&shared, i, attempts + 1).await;
                    if r.is_ok() {
                        publish(&shared, i);
                    }
                    Done::Step(i, r)
                });
                running.insert(i, h);
                changed = true;
            }
            if !changed {
                return Ok(None);
            }
        }
    }

    /// An operator's answer to a prompt. `None` leaves the gate waiting for `lifeboat approve`.
    fn answered(&self, i: usize, answer: Option<bool>) -> Result<(), EngineError> {
        let sh = &self.shared;
        let step = sh.rb.steps[i].id.clone();
        match answer {
            Some(true) => {
                sh.emitter.emit(Event::ApprovalGranted {
                    step,
                    by: sh.identity.clone(),
                    via: ApprovalVia::Prompt,
                })?;
            }
            Some(false) => {
                sh.emitter.emit(Event::ApprovalDenied {
                    step: step.clone(),
                    by: sh.identity.clone(),
                })?;
                sh.emitter.emit(Event::StepFailed {
                    step,
                    attempt: 0,
                    error: format!("declined by {}", sh.identity),
                    elapsed_ms: 0,
                    continued: false,
                })?;
            }
            None => {
                sh.unanswered.lock().expect("unanswered lock").insert(i);
            }
        }
        Ok(())
    }

    async fn cancel(
        &self,
        tasks: &mut JoinSet<Done>,
        running: &mut HashMap<usize, AbortHandle>,
        asking: &mut HashMap<usize, AbortHandle>,
        reason: &str,
    ) -> Result<(), EngineError> {
        for (_, h) in asking.drain() {
            h.abort();
        }
        let ids: Vec<usize> = running.keys().copied().collect();
        for (_, h) in running.drain() {
            h.abort();
        }
        // Wait until the aborted tasks are gone (their processes signalled) before recording.
        while tasks.join_next().await.is_some() {}
        let sh = &self.shared;
        for i in ids {
            let attempt = match sh.emitter.state().steps[i].state {
                StepState::Running { attempt } | StepState::Retrying { attempt } => attempt,
                _ => continue,
            };
            sh.emitter.emit(Event::StepInterrupted {
                step: sh.rb.steps[i].id.clone(),
                attempt,
                reason: reason.to_string(),
            })?;
        }
        Ok(())
    }

    /// Runs the `compensate` of every completed step that has one, newest completion first.
    /// Returns a clause for the run's summary.
    async fn rollback(&self, reason: &str) -> Result<String, EngineError> {
        let sh = &self.shared;
        let order: Vec<usize> = {
            let st = sh.emitter.state();
            if st.rollback == Some(false) {
                st.rollback_steps
                    .iter()
                    .filter(|id| {
                        !matches!(
                            st.steps[id.as_str()].compensation,
                            Some(CompensationRecord::Succeeded)
                                | Some(CompensationRecord::Failed { .. })
                        )
                    })
                    .filter_map(|id| sh.rb.step_index(id))
                    .collect()
            } else {
                st.completed_in_order()
                    .into_iter()
                    .rev()
                    .filter_map(|id| sh.rb.step_index(id))
                    .filter(|&i| sh.rb.steps[i].compensate.is_some())
                    .collect()
            }
        };
        if sh.emitter.state().rollback != Some(false) {
            if order.is_empty() {
                return Ok(String::new());
            }
            sh.emitter
                .emit_durable(Event::RollbackStarted {
                    reason: reason.to_string(),
                    steps: order.iter().map(|&i| sh.rb.steps[i].id.clone()).collect(),
                })
                .await?;
        }
        let mut compensated = Vec::new();
        let mut failed = Vec::new();
        for i in order {
            let id = sh.rb.steps[i].id.clone();
            let first = match sh.emitter.state().steps[i].compensation {
                Some(CompensationRecord::Running { attempt }) => attempt + 1,
                _ => 1,
            };
            match compensation_attempts(sh, i, first).await? {
                Outcome::Succeeded => compensated.push(id),
                // A compensation always starts; were it not to, it would not have undone anything.
                Outcome::Failed | Outcome::NotStarted => failed.push(id),
            }
        }
        sh.emitter
            .emit_durable(Event::RollbackFinished {
                compensated: compensated.clone(),
                failed: failed.clone(),
            })
            .await?;
        Ok(match (compensated.len(), failed.len()) {
            (c, 0) => format!("; rolled back ({c} compensated)"),
            (c, f) => format!(
                "; rollback incomplete: {c} compensated, {f} failed ({}): check by hand",
                failed.join(", ")
            ),
        })
    }

    /// An approval's message with its templates rendered (secrets stay masked in the log).
    fn gate_message(&self, i: usize) -> Option<String> {
        let sh = &self.shared;
        let touched = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let item = sh.rb.steps[i].member.as_ref().map(|m| &m.item);
        let ctx = sh.scope.step_context(None, None, Some(&touched), item);
        let rendered =
            inputs::render(&sh.env, &sh.rb.steps[i].with, &ctx, &touched, &sh.masker).ok()?;
        rendered.real.get("message")?.as_str().map(String::from)
    }

    fn dependents(&self, i: usize) -> Vec<String> {
        self.shared
            .rb
            .steps
            .iter()
            .filter(|s| s.needs.contains(&i))
            .map(|s| s.id.clone())
            .collect()
    }

    fn publish(&self, i: usize) {
        publish(&self.shared, i);
    }

    fn eval(&self, expr: &str, item: Option<&Value>) -> Result<bool, String> {
        eval(&self.shared, expr, None, item)
    }
}

/// Makes a settled step visible to the templates of the steps after it: its outputs and
/// `status` once it succeeded; its `status` (and `error`) once it failed with `on_failure:
/// continue` or was skipped, so a fallback path can follow it.
fn publish(sh: &Shared, i: usize) {
    let is_settled = {
        let st = sh.emitter.state();
        let rec = &st.steps[i];
        let id = &sh.rb.steps[i].id;
        match (&rec.state, &rec.outputs) {
            (StepState::Succeeded { .. }, Some(o)) => sh.scope.steps.set(id, o),
            (StepState::Failed { continued: true }, _) => {
                sh.scope
                    .steps
                    .set_settled(id, "failed", rec.last_error.as_deref())
            }
            (StepState::Skipped { .. }, _) => sh.scope.steps.set_settled(id, "skipped", None),
            _ => {}
        }
        settled(&rec.state)
    };
    if let Some(m) = &sh.rb.steps[i].member
        && is_settled
    {
        let all = {
            let mut g = sh.group_settled.lock().expect("group lock");
            let done = g.entry(m.group.clone()).or_default();
            done.insert(i);
            done.len() == sh.rb.groups.get(&m.group).map_or(0, Vec::len)
        };
        if all {
            publish_group(sh, &m.group);
        }
    }
}

/// `steps.<group>`: the outputs of a `for_each`'s steps as a list in item order (`none` for one
/// that did not succeed), and how the group settled: `failed` if any step failed, `skipped` if
/// all were, `not_run` while any has not settled, else `succeeded`.
fn publish_group(sh: &Shared, group: &str) {
    let Some(members) = sh.rb.groups.get(group) else {
        return;
    };
    let st = sh.emitter.state();
    let states: Vec<&StepState> = members.iter().map(|&j| &st.steps[j].state).collect();
    let status = if states.iter().any(|s| matches!(s, StepState::Failed { .. })) {
        "failed"
    } else if !states.is_empty()
        && states
            .iter()
            .all(|s| matches!(s, StepState::Skipped { .. }))
    {
        "skipped"
    } else if states.iter().any(|s| !settled(s)) {
        "not_run"
    } else {
        "succeeded"
    };
    let outputs = members
        .iter()
        .map(|&j| st.steps[j].outputs.clone().unwrap_or(Value::Null))
        .collect();
    sh.scope.steps.set_group(group, outputs, status);
}

/// Makes a step of `steps` visible to the `on_failure` and `finally` steps however it ended:
/// `compensated` (rolled back) and `not_run` too, so that they can say what happened.
fn publish_ending(sh: &Shared, i: usize) {
    let st = sh.emitter.state();
    let id = &sh.rb.steps[i].id;
    match &st.steps[i].state {
        StepState::Compensated => sh.scope.steps.set_settled(id, "compensated", None),
        s if !settled(s) => sh.scope.steps.set_settled(id, "not_run", None),
        _ => {
            drop(st);
            publish(sh, i);
        }
    }
}

/// The step of `steps` whose failure ended the run, and its error: the first to fail, in the
/// order they finished.
fn first_failure(rb: &ValidRunbook, st: &super::RunState) -> Option<(String, String)> {
    st.steps
        .iter()
        .take(rb.main_len())
        .filter(|(_, r)| r.state == (StepState::Failed { continued: false }))
        .min_by(|a, b| a.1.finished.cmp(&b.1.finished))
        .map(|(id, r)| (id.clone(), r.last_error.clone().unwrap_or_default()))
}

/// A step's `assert`, over its outputs. A drill's steady-state check also sees `before`: in its
/// second pass (`after.<id>`) what it returned in the first (`before.<id>`); in the first, its
/// own outputs, so a comparison with `before` holds there and measures in the second.
fn eval_assert(
    sh: &Shared,
    id: &str,
    expr: &str,
    outputs: &Value,
    item: Option<&Value>,
) -> Result<bool, String> {
    // Step ids have no `.`: only the two passes of a drill's checks are named so.
    let before = if id.starts_with("before.") {
        Some(minijinja::Value::from(minijinja::value::Serde(
            serde_json::json!({ "outputs": outputs }),
        )))
    } else {
        id.strip_prefix("after.")
            .and_then(|check| sh.scope.steps.get(&format!("before.{check}")))
    };
    truth(sh, expr, &sh.scope.assert_context(outputs, before, item))
}

/// Whether an expression (`when`, an action's `until`) holds over the run's context, `outputs`
/// and, in a step a `for_each` made, `item`.
fn eval(
    sh: &Shared,
    expr: &str,
    outputs: Option<&Value>,
    item: Option<&Value>,
) -> Result<bool, String> {
    truth(sh, expr, &sh.scope.step_context(None, outputs, None, item))
}

/// Whether an expression holds in `ctx`; its error in words when it cannot be evaluated.
fn truth(sh: &Shared, expr: &str, ctx: &minijinja::Value) -> Result<bool, String> {
    sh.env
        .compile_expression(expr)
        .and_then(|e| e.eval(ctx))
        .map(|v| v.is_true())
        .map_err(|e| {
            e.detail()
                .map_or_else(|| e.kind().to_string(), String::from)
        })
}

/// What differs between a step's attempts and its compensation's.
struct Attempted<'a> {
    id: &'a str,
    action: &'a Action,
    with: &'a Value,
    assert: Option<&'a str>,
    timeout: Duration,
    retry: RetryPolicy,
    compensation: bool,
    continued: bool,
    /// A step of `on_failure` or `finally`: it runs after the failure that halted the run.
    ending: bool,
    /// The item of a step a `for_each` made.
    item: Option<&'a Value>,
    /// What `outputs` is in the templates: the compensated step's outputs.
    outputs: Option<Value>,
}

async fn step_attempts(sh: &Arc<Shared>, i: usize, first: u32) -> Result<Outcome, EngineError> {
    let s = &sh.rb.steps[i];
    attempts(
        sh,
        Attempted {
            id: &s.id,
            action: &s.action,
            with: &s.with,
            assert: s.assert.as_deref(),
            timeout: s.timeout,
            retry: s.retry,
            compensation: false,
            continued: s.on_failure == OnFailure::Continue,
            ending: s.phase != StepPhase::Main,
            item: s.member.as_ref().map(|m| &m.item),
            outputs: None,
        },
        first,
    )
    .await
}

async fn compensation_attempts(
    sh: &Arc<Shared>,
    i: usize,
    first: u32,
) -> Result<Outcome, EngineError> {
    let s = &sh.rb.steps[i];
    let c = s
        .compensate
        .as_ref()
        .expect("only steps with compensate are rolled back");
    // Its own statement: a state guard held across the await below would deadlock the emitter.
    let outputs = sh.emitter.state().steps[i].outputs.clone();
    attempts(
        sh,
        Attempted {
            id: &s.id,
            action: &c.action,
            with: &c.with,
            assert: None,
            timeout: c.timeout,
            retry: c.retry,
            compensation: true,
            continued: false,
            ending: false,
            item: s.member.as_ref().map(|m| &m.item),
            outputs,
        },
        first,
    )
    .await
}

/// Runs attempts until one succeeds, the error is not transient, or the policy is spent.
async fn attempts(sh: &Arc<Shared>, a: Attempted<'_>, first: u32) -> Result<Outcome, EngineError> {
    let mut delays = a.retry.delays();
    let mut attempt = first;
    let step_started = Instant::now();
    loop {
        let key = if a.compensation {
            format!("{}/{}/compensate/{attempt}", sh.run_id, a.id)
        } else {
            format!("{}/{}/{attempt}", sh.run_id, a.id)
        };
        let t0 = Instant::now();
        let result: Result<Value, AttemptError> = async {
            let touched = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let ctx = sh
                .scope
                .step_context(Some(&key), a.outputs.as_ref(), Some(&touched), a.item);
            // Off the async workers: a render is bounded (fuel, a memory budget) but may take a
            // while, and signals must be heard meanwhile; a cancelled attempt stops waiting.
            let rendered = {
                let (shared, with, ctx, touched) =
                    (sh.clone(), a.with.clone(), ctx, touched.clone());
                tokio::task::spawn_blocking(move || {
                    inputs::render(&shared.env, &with, &ctx, &touched, &shared.masker)
                })
                .await
                .map_err(|e| ActionError::permanent(format!("rendering `with` stopped: {e}")))?
                .map_err(ActionError::permanent)?
            };
            let typed = match Action::parse(a.action.name(), &rendered.real) {
                Ok(Some(t)) => t,
                Ok(None) => unreachable!("a validated action exists"),
                Err(e) => {
                    return Err(ActionError::permanent(format!(
                        "after rendering, `with{}` does not fit `{}`: {}",
                        e.field,
                        a.action.name(),
                        e.message
                    ))
                    .into());
                }
            };
            // What validation checked of literal values, checked of rendered ones: a templated
            // name or key breaks a rule before the action touches anything, not after.
            if let Some(p) = typed.check_rendered().into_iter().next() {
                return Err(ActionError::permanent(format!(
                    "after rendering, `with{}` of `{}`: {}",
                    p.field,
                    a.action.name(),
                    p.message
                ))
                .into());
            }
            let started = if a.compensation {
                Event::CompensationStarted {
                    step: a.id.into(),
                    attempt,
                    attempt_key: key.clone(),
                    action: a.action.name().into(),
                    inputs: rendered.recorded,
                }
            } else {
                Event::StepStarted {
                    step: a.id.into(),
                    attempt,
                    attempt_key: key.clone(),
                    action: a.action.name().into(),
                    inputs: rendered.recorded,
                }
            };
            // The record of the attempt is on disk before the attempt touches anything. A
            // step's first attempt here starts only while no other step has failed: the run
            // loop may have decided to start it before it heard of that failure.
            let fresh = !a.compensation && !a.ending && attempt == first;
            let allowed = sh
                .emitter
                .emit_durable_if(started, |st| !(fresh && st.halted))
                .await
                .map_err(AttemptError::Log)?;
            if allowed.is_none() {
                return Err(AttemptError::Halted);
            }
            let eval = |expr: &str, outputs: &Value| eval(sh, expr, Some(outputs), a.item);
            let connection =
                |name: &str| inputs::connection(&sh.rb, &sh.scope, &sh.env, &sh.masker, name);
            let progress = |message: &str| {
                // Progress is informative: a log that cannot take it will fail the next
                // durable event, which is where that error belongs.
                let _ = sh.emitter.emit(Event::StepProgress {
                    step: a.id.into(),
                    attempt,
                    message: message.into(),
                });
            };
            let note = |k: &str, value: Value| -> crate::actions::NoteFuture {
                let event = Event::StepNoted {
                    step: a.id.into(),
                    attempt,
                    compensation: a.compensation,
                    key: k.into(),
                    value,
                };
                let sh = Arc::clone(sh);
                Box::pin(async move {
                    sh.emitter.emit_durable(event).await.map(drop).map_err(|e| {
                        ActionError::permanent(format!("cannot record a note in the run log: {e}"))
                    })
                })
            };
            let recall = |k: &str| {
                let state = sh.emitter.state();
                let step = state.steps.get(a.id)?;
                step.notes
                    .get(&super::state::note_key(a.compensation, k))
                    .cloned()
            };
            let exec = Exec {
                run_id: &sh.run_id,
                step: a.id,
                attempt_key: &key,
                http: &sh.http,
                eval: &eval,
                connection: &connection,
                progress: &progress,
                note: &note,
                recall: &recall,
                calls: &sh.calls,
            };
            // Client libraries' diagnostics (`-v`) name the attempt they belong to.
            let span = tracing::info_span!("attempt", step = %a.id, n = attempt);
            let running = tracing::Instrument::instrument(sh.runner.execute(&typed, &exec), span);
            // Every child process of the attempt carries its key: see `process::end_orphans`.
            let running = crate::actions::support::process::ATTEMPT.scope(key.clone(), running);
            // Long transfers report where they stand as this attempt's progress.
            let say: Arc<dyn Fn(&str) + Send + Sync> = {
                let (sh, step) = (Arc::clone(sh), a.id.to_string());
                Arc::new(move |message: &str| {
                    let _ = sh.emitter.emit(Event::StepProgress {
                        step: step.clone(),
                        attempt,
                        message: message.into(),
                    });
                })
            };
            let running = crate::actions::support::progress::REPORTER.scope(say, running);
            let outputs = match tokio::time::timeout(a.timeout, running).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(ActionError::transient(format!(
                        "timed out after {}",
                        crate::runbook::duration::format(a.timeout)
                    ))
                    .into());
                }
            };
            if let Some(expr) = a.assert {
                match eval_assert(sh, a.id, expr, &outputs, a.item) {
                    Ok(true) => {}
                    Ok(false) => {
                        let shown: String = outputs.to_string().chars().take(300).collect();
                        let msg = format!("assert `{expr}` is false; outputs: {shown}");
                        // Asserting on a read-only step is how a runbook polls: try again.
                        return Err(if a.action.effect() == crate::actions::Effect::ReadOnly {
                            ActionError::transient(msg)
                        } else {
                            ActionError::permanent(msg)
                        }
                        .into());
                    }
                    Err(e) => {
                        return Err(ActionError::permanent(format!(
                            "assert fails to evaluate: {e}"
                        ))
                        .into());
                    }
                }
            }
            Ok(outputs)
        }
        .await;
        let elapsed_ms = t0.elapsed().as_millis() as u64;
        match result {
            Ok(outputs) => {
                let ev = if a.compensation {
                    Event::CompensationSucceeded {
                        step: a.id.into(),
                        attempt,
                        outputs,
                        elapsed_ms,
                    }
                } else {
                    Event::StepSucceeded {
                        step: a.id.into(),
                        attempt,
                        outputs,
                        elapsed_ms: step_started.elapsed().as_millis() as u64,
                    }
                };
                // Not waited for: the next step's `step_started` shares its sync.
                sh.emitter.emit(ev)?;
                return Ok(Outcome::Succeeded);
            }
            Err(AttemptError::Log(e)) => return Err(e),
            Err(AttemptError::Halted) => return Ok(Outcome::NotStarted),
            Err(AttemptError::Action(mut e)) => {
                if let (Some(codes), Some(code)) = (&a.retry.on_exit_codes, e.exit_code)
                    && !codes.contains(code)
                    && attempt < a.retry.attempts
                {
                    e.message.push_str(&format!(
                        " (not retried: exit status {code} is not in `retry.on_exit_codes`)"
                    ));
                }
                let next = if a.retry.retries(&e) {
                    delays.next()
                } else {
                    None
                };
                if let Some(delay) = next {
                    let retry_in_ms = Some(delay.as_millis() as u64);
                    let ev = if a.compensation {
                        Event::CompensationAttemptFailed {
                            step: a.id.into(),
                            attempt,
                            error: e.message,
                            transient: true,
                            retry_in_ms,
                            elapsed_ms,
                        }
                    } else {
                        Event::StepAttemptFailed {
                            step: a.id.into(),
                            attempt,
                            error: e.message,
                            transient: true,
                            retry_in_ms,
                            elapsed_ms,
                        }
                    };
                    sh.emitter.emit(ev)?;
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                    continue;
                }
                let ev = if a.compensation {
                    Event::CompensationFailed {
                        step: a.id.into(),
                        attempt,
                        error: e.message,
                        elapsed_ms,
                    }
                } else {
                    Event::StepFailed {
                        step: a.id.into(),
                        attempt,
                        error: e.message,
                        elapsed_ms: step_started.elapsed().as_millis() as u64,
                        continued: a.continued,
                    }
                };
                sh.emitter.emit(ev)?;
                return Ok(Outcome::Failed);
            }
        }
    }
}

enum AttemptError {
    Action(ActionError),
    /// The run log cannot be written: nothing may start.
    Log(EngineError),
    /// Another step failed before this one's first attempt could start; it stays pending.
    Halted,
}

impl From<ActionError> for AttemptError {
    fn from(e: ActionError) -> Self {
        AttemptError::Action(e)
    }
}
