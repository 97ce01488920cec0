//! A run's lifecycle around the run loop, shared by `run`, `resume`, `approve` and `drill`:
//! starting a run (locks, the run's record, `run_started`), reading one back to continue it
//! (torn-line repair, refusing a tampered log or a changed runbook, the steps a crash cut short),
//! approving a gate, and ending (the head anchor, locks paused or released). It returns what
//! happened; the CLI prints it.

use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use super::context::RunScope;
use super::run::{Engine, Setup};
use super::signals::Signals;
use super::{
    ApprovalVia, Emitter, Event, Masker, Notice, Options, Prompter, Recorded, RunState, RunStatus,
    Runner, Sink, StepState, parse_log, secrets,
};
use crate::drill::DrillInfo;
use crate::error::{Error, Result};
use crate::runbook::ValidRunbook;
use crate::runlog;
use crate::store::{self, Driver, Holder, LockSet, LockState, Store};

/// What a session talks to besides the store: the reporter, the operator, the HTTP client
/// actions share, what runs actions, and the signals that interrupt a run. The CLI wires the
/// real ones; the engine's tests script the runner and the signals.
pub struct Wiring {
    pub sink: Arc<dyn Sink>,
    pub prompter: Arc<dyn Prompter>,
    pub http: reqwest::Client,
    pub runner: Arc<dyn Runner>,
    pub signals: Box<dyn Signals>,
}

/// Runs in one state store, driven by this process.
pub struct Session<'s> {
    pub store: &'s Store,
    pub opts: Options,
    pub wiring: Wiring,
}

/// A runbook about to run for the first time.
pub struct NewRun<'a> {
    /// As given on the command line; recorded in `run_started`.
    pub file: &'a Path,
    /// The file's bytes, stored with the run so that `resume` runs exactly them.
    pub text: &'a [u8],
    pub runbook: &'a ValidRunbook,
    pub params: &'a IndexMap<String, Value>,
    /// Marks the run as a drill of this scenario.
    pub drill: Option<Box<DrillInfo>>,
    /// `RUN/STEP`: the step of another run that starts this one (`action: runbook`).
    pub parent: Option<String>,
}

/// A run that is recorded, holds its locks, and is ready to drive: its id can be shown, and
/// `resume` can finish it from here whatever happens next.
pub struct Ready<'s> {
    /// Set by [`Session::abort`]: the run is ended, not continued.
    abort: Option<Abort>,
    store: &'s Store,
    engine: Engine,
    emitter: Arc<Emitter>,
    locks: LockSet,
    signals: Box<dyn Signals>,
    run_id: String,
    /// Keeps the run to this process until it ends.
    _driver: Driver,
}

/// How a drive ended.
#[derive(Debug)]
pub struct Ended {
    pub run_id: String,
    pub status: RunStatus,
    /// The hash of the log's last line, anchored outside the log.
    pub log_hash: String,
    /// Lines written and syncs made by this process.
    pub log: runlog::WriterStats,
}

/// `lifeboat abort`: whether to roll back, and why, in the operator's words.
#[derive(Debug, Clone)]
pub struct Abort {
    pub rollback: bool,
    pub reason: Option<String>,
}

/// What `resume` found.
pub enum Resumed<'s> {
    /// The run had succeeded already: nothing to do.
    AlreadySucceeded,
    Ready(Box<Ready<'s>>),
}

/// A recorded approval.
#[derive(Debug)]
pub struct Approved {
    pub by: String,
}

impl<'s> Session<'s> {
    /// Records a new run of `new.runbook` and takes its locks. Nothing has run yet.
    pub async fn start(self, new: NewRun<'_>) -> Result<Ready<'s>> {
        // `for_each` made into steps, as `resume` will make them from the same params.
        let expanded = crate::runbook::expand(new.runbook, new.params).map_err(|d| {
            Error::Invalid(
                d.iter()
                    .map(|d| d.message.clone())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let rb = &expanded;
        check_runnable(rb)?;
        let secrets = secrets::resolve(rb).map_err(Error::Invalid)?;
        let store = self.store;
        let identity = store.identity().await.map_err(Error::Invalid)?;
        let run_id = store::new_run_id();
        let locks = store.acquire(&rb.locks, &holder(&run_id)).await?;
        let masker = Masker::new(&secrets);
        let recorded = self.record(&new, rb, &run_id, &masker, &locks).await;
        let (emitter, driver) = match recorded {
            Ok(r) => r,
            Err(e) => {
                // Nothing ran: leave nothing behind, and no lock held by a run that never was.
                store.abandon_run(&run_id).await;
                locks.release().await;
                return Err(e);
            }
        };
        let started_at = emitter.state().started_at.clone();
        let scope = RunScope::new(
            new.params,
            &secrets,
            run_map(&run_id, &started_at, &self.opts.operator, rb),
        );
        Ok(self.ready(
            rb.clone(),
            emitter,
            scope,
            masker,
            locks,
            run_id,
            driver,
            identity,
        ))
    }

    /// Creates the run and writes its first lines durably: `run_started`, and the locks taken
    /// from crashed runs. The run is published (visible, resumable) only once they are.
    async fn record(
        &self,
        new: &NewRun<'_>,
        rb: &ValidRunbook,
        run_id: &str,
        masker: &Arc<Masker>,
        locks: &LockSet,
    ) -> Result<(Arc<Emitter>, Driver)> {
        let store = self.store;
        let writer = store
            .create_run(run_id, new.text)
            .await
            .map_err(Error::Store)?;
        let state = RunState::new(rb.steps.iter().map(|s| s.id.as_str()));
        let emitter = Arc::new(Emitter::new(
            writer,
            masker.clone(),
            state,
            self.wiring.sink.clone(),
        ));
        let started = Event::RunStarted {
            run: run_id.to_string(),
            runbook: rb.name.clone(),
            version: rb.version.to_string(),
            file: new.file.display().to_string(),
            file_sha256: runlog::sha256_hex(new.text),
            params: new
                .params
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            operator: self.opts.operator.clone(),
            host: store::hostname(),
            pid: std::process::id(),
            lifeboat: env!("CARGO_PKG_VERSION").into(),
            locks: rb.locks.clone(),
            max_parallel: self.opts.max_parallel,
            timeout_ms: self
                .opts
                .timeout
                .or(rb.timeout)
                .map(|t| t.as_millis() as u64),
            yes: self.opts.yes,
            drill: new.drill.clone(),
            dir: std::fs::canonicalize(new.file)
                .ok()
                .and_then(|f| f.parent().map(|d| d.display().to_string())),
            parent: new.parent.clone(),
        };
        emitter.emit_durable(started).await?;
        record_takeovers(&emitter, locks)?;
        emitter.flush().await?;
        // A run exists only once its first line is durable: a crash before leaves nothing.
        store.publish_run(run_id).await.map_err(Error::Store)?;
        let driver = store.drive(run_id).await.map_err(Error::Store)?;
        Ok((emitter, driver))
    }

    /// Continues a stopped, failed or crashed run from what its log says.
    pub async fn resume(self, run_id: &str) -> Result<Resumed<'s>> {
        self.take_over(run_id, None).await
    }

    /// Ends a paused, waiting, failed or crashed run for good (`lifeboat abort`), its rollback
    /// first when `rollback`. A run another process is driving on this host is asked to stop
    /// first, as Ctrl-C asks, and waited for; one driven on another host is refused.
    pub async fn abort(self, run_id: &str, abort: Abort) -> Result<Resumed<'s>> {
        self.take_over(run_id, Some(abort)).await
    }

    async fn take_over(self, run_id: &str, abort: Option<Abort>) -> Result<Resumed<'s>> {
        let store = self.store;
        store.exists(run_id).await.map_err(Error::Invalid)?;
        let driver = match (store.drive(run_id).await, &abort) {
            (Ok(d), _) => d,
            (Err(e), None) => return Err(Error::Held(e)),
            (Err(_), Some(_)) => stop_driver(store, run_id, self.opts.grace).await?,
        };
        let stored = read_run(store, run_id, self.wiring.sink.as_ref()).await?;
        let rb = stored.runbook;
        let state = RunState::replay(rb.steps.iter().map(|s| s.id.as_str()), &stored.events);
        match (state.status, &abort) {
            (RunStatus::Succeeded, None) => return Ok(Resumed::AlreadySucceeded),
            (RunStatus::Succeeded, Some(_)) => {
                return Err(Error::Invalid(format!(
                    "run {run_id} succeeded; there is nothing to abort"
                )));
            }
            (RunStatus::Aborted, _) => {
                return Err(Error::Invalid(format!(
                    "run {run_id} was aborted ({}); an aborted run is not continued: start a new one",
                    state.summary.as_deref().unwrap_or_default()
                )));
            }
            _ => {}
        }
        // An abort cut short is finished, whichever command takes the run over next.
        let abort = abort.or_else(|| {
            state
                .aborting
                .clone()
                .map(|(rollback, reason)| Abort { rollback, reason })
        });
        let compensates = abort.as_ref().is_none_or(|a| a.rollback);
        if compensates {
            check_runnable(&rb)?;
        }
        let values: IndexMap<String, Value> = state.params.clone().into_iter().collect();
        // Ending a run without its rollback runs nothing, so it needs none of its secrets.
        let secrets = match secrets::resolve(&rb) {
            Ok(s) => s,
            Err(_) if !compensates => secrets::Secrets::default(),
            Err(e) => return Err(Error::Invalid(e)),
        };
        let identity = store.identity().await.map_err(Error::Invalid)?;
        let locks = store.acquire(&rb.locks, &holder(run_id)).await?;
        let writer = open_for_appending(store, run_id, &stored.verdict).await?;
        let masker = Masker::new(&secrets);
        let started_at = state.started_at.clone();
        let cut_short: Vec<(String, u32)> = state
            .steps
            .iter()
            .filter_map(|(id, r)| match r.state {
                StepState::Running { attempt } => Some((id.clone(), attempt)),
                _ => None,
            })
            .collect();
        let emitter = Arc::new(Emitter::new(
            writer,
            masker.clone(),
            state,
            self.wiring.sink.clone(),
        ));
        let taken = match &abort {
            None => Event::RunResumed {
                operator: self.opts.operator.clone(),
                host: store::hostname(),
                pid: std::process::id(),
                yes: self.opts.yes,
            },
            Some(a) => Event::RunAborted {
                by: identity.clone(),
                reason: a.reason.clone(),
                rollback: a.rollback,
                host: store::hostname(),
                pid: std::process::id(),
            },
        };
        emitter.emit_durable(taken).await?;
        record_takeovers(&emitter, &locks)?;
        let keys = attempts_left_running(&emitter.state(), run_id);
        let ended = end_orphans(keys, self.opts.grace).await;
        for (step, attempt) in cut_short {
            let key = format!("{run_id}/{step}/{attempt}");
            let mut reason =
                String::from("the process running it stopped before recording how it ended");
            if let Some(o) = ended.iter().find(|o| o.attempt_key == key) {
                reason.push_str(&orphans_ended(o));
            }
            emitter.emit(Event::StepInterrupted {
                step,
                attempt,
                reason,
            })?;
        }
        emitter.flush().await?;
        let scope = RunScope::new(
            &values,
            &secrets,
            run_map(run_id, &started_at, &self.opts.operator, &rb),
        );
        let mut ready = self.ready(
            rb,
            emitter,
            scope,
            masker,
            locks,
            run_id.to_string(),
            driver,
            identity,
        );
        ready.abort = abort;
        Ok(Resumed::Ready(Box::new(ready)))
    }

    #[allow(clippy::too_many_arguments)]
    fn ready(
        self,
        rb: ValidRunbook,
        emitter: Arc<Emitter>,
        scope: RunScope,
        masker: Arc<Masker>,
        locks: LockSet,
        run_id: String,
        driver: Driver,
        identity: String,
    ) -> Ready<'s> {
        let calls = crate::actions::Calls {
            dir: emitter.state().dir.clone().map(std::path::PathBuf::from),
            state: self.opts.state.clone(),
            yes: self.opts.yes,
            grace: Some(self.opts.grace),
        };
        let engine = Engine::new(Setup {
            calls,
            rb: Arc::new(rb),
            emitter: emitter.clone(),
            scope,
            masker,
            http: self.wiring.http,
            runner: self.wiring.runner,
            opts: self.opts,
            prompter: self.wiring.prompter,
            run_id: run_id.clone(),
            identity,
        });
        Ready {
            abort: None,
            store: self.store,
            engine,
            emitter,
            locks,
            signals: self.wiring.signals,
            run_id,
            _driver: driver,
        }
    }
}

impl Ready<'_> {
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Drives the run until it succeeds, fails (after its rollback), waits for an approval, or
    /// is interrupted; then anchors the log's end and pauses or releases the locks.
    pub async fn drive(mut self) -> Result<Ended> {
        let mut watched = super::signals::Watched {
            signals: self.signals.as_mut(),
            locks: &mut self.locks,
            lost: false,
        };
        let result = match &self.abort {
            None => self.engine.drive(&mut watched).await,
            Some(a) => self.engine.abort(a).await,
        };
        // Anchor the end of the log outside it, closed: a rewritten last line shows, and so do
        // lines added after this. Only what is on disk is anchored.
        let flushed = self.emitter.flush().await;
        let (last, hash) = self.emitter.writer().last();
        if flushed.is_ok() {
            let head = runlog::Head {
                seq: last,
                hash: hash.clone(),
                open: false,
            };
            if let Err(e) = self.store.write_head(&self.run_id, &head).await {
                self.emitter.notice(&Notice::HeadNotWritten(e));
            }
        }
        match result {
            Ok(status) => {
                match status {
                    RunStatus::WaitingForApproval | RunStatus::Interrupted => {
                        self.locks.pause().await
                    }
                    _ => self.locks.release().await,
                }
                Ok(Ended {
                    run_id: self.run_id,
                    status,
                    log_hash: hash,
                    log: self.emitter.writer().stats(),
                })
            }
            Err(e) => {
                // Locks stay with the run: its state is whatever the log says, and resume decides.
                self.locks.pause().await;
                Err(Error::Store(format!(
                    "run {} stopped: {e}; its log holds everything up to there: fix the state \
                     store, then `lifeboat resume {}`",
                    self.run_id, self.run_id
                )))
            }
        }
    }
}

/// Records an approval of `step`, for a run that is not being driven, by whoever the store says
/// is acting ([`Store::identity`]). It goes through the emitter like every event, so it is
/// masked, verified against the chain and durable. A step is approved once.
pub async fn approve(
    store: &Store,
    sink: Arc<dyn Sink>,
    run_id: &str,
    step: &str,
) -> Result<Approved> {
    let by = store.identity().await.map_err(Error::Invalid)?;
    store.exists(run_id).await.map_err(Error::Invalid)?;
    let _driver = store
        .drive(run_id)
        .await
        .map_err(|e| Error::Held(format!("{e}; answer its prompt, or stop it first")))?;
    let stored = read_run(store, run_id, sink.as_ref()).await?;
    let rb = stored.runbook;
    let state = RunState::replay(rb.steps.iter().map(|s| s.id.as_str()), &stored.events);
    let Some(rec) = state.steps.get(step) else {
        let known: Vec<&str> = rb.steps.iter().map(|s| s.id.as_str()).collect();
        return Err(Error::Invalid(format!(
            "run {run_id} has no step `{step}`{}",
            crate::diagnostics::did_you_mean(step, known.iter().copied())
                .map(|h| format!("; {h}"))
                .unwrap_or_default()
        )));
    };
    if !matches!(
        rec.state,
        StepState::WaitingApproval | StepState::Interrupted { .. }
    ) {
        let what = serde_json::to_value(&rec.state)
            .ok()
            .and_then(|v| v["state"].as_str().map(String::from))
            .unwrap_or_default();
        return Err(Error::Invalid(format!(
            "step `{step}` of run {run_id} is not waiting for an approval (it is {what})"
        )));
    }
    let i = rb
        .step_index(step)
        .expect("the state has the runbook's steps");
    let approvers: &[String] = match &rb.steps[i].action {
        crate::actions::Action::Approval(a) => &a.approvers,
        _ => &[],
    };
    if let Some(g) = &rec.grant
        && (approvers.is_empty() || approvers.contains(&g.by))
    {
        return Err(Error::Invalid(format!(
            "step `{step}` of run {run_id} is already approved, by {} at {}; `lifeboat resume {run_id}` continues it",
            g.by, g.ts
        )));
    }
    if !approvers.is_empty() && !approvers.contains(&by) {
        return Err(Error::Invalid(format!(
            "`{step}` may be approved only by {}; you are `{by}` ({})",
            approvers.join(" or "),
            match store {
                Store::Postgres(_) => "the state store's database role",
                _ => "this OS account",
            }
        )));
    }
    let writer = open_for_appending(store, run_id, &stored.verdict).await?;
    // The secrets this process can read: an approver's shell may lack some, and those it cannot
    // read it cannot leak either.
    let masker = Masker::new(&secrets::resolve_available(&rb));
    let emitter = Emitter::new(writer, masker, state, sink.clone());
    emitter
        .emit_durable(Event::ApprovalGranted {
            step: step.into(),
            by: by.clone(),
            via: ApprovalVia::Command,
        })
        .await?;
    let (seq, hash) = emitter.writer().last();
    drop(emitter);
    let closed = runlog::Head {
        seq,
        hash,
        open: false,
    };
    if let Err(e) = store.write_head(run_id, &closed).await {
        sink.notice(&Notice::HeadNotWritten(e));
    }
    Ok(Approved { by })
}

/// A run as stored: its runbook (composed again if it was a drill), its events, and how its
/// log verified.
struct Stored {
    runbook: ValidRunbook,
    events: Vec<Recorded>,
    verdict: runlog::Verdict,
}

/// Reads a run back to continue it: repairs a torn last line, refuses a log that fails
/// verification or a stored runbook that is not the one the run started with.
async fn read_run(store: &Store, run_id: &str, sink: &dyn Sink) -> Result<Stored> {
    let mut text = store.read_log(run_id).await.map_err(Error::Failed)?;
    if !text.is_empty() && !text.ends_with(b"\n") {
        // A crash during a write: that line was never acknowledged as durable, so nothing it
        // announced was started.
        let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        text.truncate(keep);
        store
            .cut_log(run_id, keep as u64)
            .await
            .map_err(Error::Store)?;
        sink.notice(&Notice::TornLineRemoved);
    }
    let head = store.head(run_id).await.map_err(Error::Failed)?;
    let verdict = runlog::verify(run_id, &text, head.as_ref());
    if let Some((line, why)) = &verdict.first_bad {
        return Err(Error::Failed(format!(
            "the run log of {run_id} fails verification at line {line}: {why}; refusing to continue it"
        )));
    }
    let events = parse_log(&String::from_utf8_lossy(&text)).map_err(Error::Failed)?;
    let Some(first) = events.first() else {
        return Err(Error::Failed(format!(
            "run {run_id} stopped before it recorded anything, so nothing ran; start it again with `lifeboat run`"
        )));
    };
    let Event::RunStarted {
        file_sha256,
        file,
        drill,
        params,
        ..
    } = &first.event
    else {
        return Err(Error::Failed(format!(
            "run {run_id}'s log does not begin with run_started"
        )));
    };
    let bytes = store.runbook(run_id).await.map_err(Error::Failed)?;
    if &runlog::sha256_hex(&bytes) != file_sha256 {
        return Err(Error::Failed(format!(
            "the runbook stored with run {run_id} is not the one it started with; refusing to continue it"
        )));
    }
    let loaded = crate::runbook::load_str(file, &String::from_utf8_lossy(&bytes));
    // The same steps as the run began with: its `for_each` over the params it recorded.
    let params: IndexMap<String, Value> = params.clone().into_iter().collect();
    let rb = loaded
        .result
        .and_then(|rb| crate::runbook::expand(&rb, &params))
        .map_err(|diags| Error::runbook(loaded.source, diags))?;
    // A drill ran its scenario's steps too: continue the same composition.
    let runbook = match drill {
        Some(info) => {
            crate::drill::compose(&rb, &info.scenario)
                .map_err(Error::Failed)?
                .runbook
        }
        None => rb,
    };
    Ok(Stored {
        runbook,
        events,
        verdict,
    })
}

/// A writer appending to a verified log, once its head anchor says, durably, that a process is
/// appending: lines after a closed head are tampering, lines after an open one a crash.
async fn open_for_appending(
    store: &Store,
    run_id: &str,
    verdict: &runlog::Verdict,
) -> Result<runlog::LogWriter> {
    let open = runlog::Head {
        seq: verdict.lines,
        hash: verdict.last_hash.clone(),
        open: true,
    };
    store
        .write_head(run_id, &open)
        .await
        .map_err(Error::Store)?;
    store
        .log_writer(run_id, verdict.lines, verdict.last_hash.clone())
        .await
        .map_err(Error::Store)
}

/// Refuses a runbook with a step this version cannot run, before anything starts.
fn check_runnable(rb: &ValidRunbook) -> Result<()> {
    let mut missing = Vec::new();
    for s in &rb.steps {
        if !s.action.runnable() {
            missing.push(format!(
                "step `{}` uses `{}`, which it cannot run yet",
                s.id,
                s.action.name()
            ));
        } else if let Some(why) = s.action.unsupported() {
            missing.push(format!("step `{}`: {why}", s.id));
        }
        if let Some(c) = &s.compensate
            && !c.action.runnable()
        {
            missing.push(format!(
                "the compensate of `{}` uses `{}`, which it cannot run yet",
                s.id,
                c.action.name()
            ));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing
        .iter()
        .map(|m| format!("\n  - {m} (see docs/roadmap.md)"))
        .collect();
    Err(Error::Invalid(format!(
        "this version of lifeboat cannot run this runbook; nothing was started:{}",
        list.concat()
    )))
}

fn holder(run: &str) -> Holder {
    Holder {
        run: run.to_string(),
        pid: std::process::id(),
        host: store::hostname(),
        since: runlog::now_rfc3339(),
        state: LockState::Held,
    }
}

/// Records the locks taken from crashed runs, right after the run (re)starts.
fn record_takeovers(emitter: &Emitter, locks: &LockSet) -> Result<()> {
    for (lock, from_run, from_pid) in locks.taken_over() {
        emitter.emit(Event::LockTakenOver {
            lock: lock.clone(),
            from_run: from_run.clone(),
            from_pid: *from_pid,
        })?;
    }
    Ok(())
}

/// What templates see as `run`.
fn run_map(
    id: &str,
    started_at: &str,
    operator: &str,
    rb: &ValidRunbook,
) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), id.into());
    m.insert("started_at".into(), started_at.into());
    m.insert("operator".into(), operator.into());
    m.insert("runbook".into(), rb.name.clone().into());
    m.insert("version".into(), rb.version.to_string().into());
    m
}

/// Ends the processes left of the attempts an earlier lifeboat left running or cut short (its
/// own children, in their process groups, outlive a `kill -9`), before anything is decided
/// about those attempts. The caller holds the run, so no live process runs them.
pub(super) async fn end_orphans(
    keys: Vec<String>,
    grace: std::time::Duration,
) -> Vec<crate::actions::support::process::Orphans> {
    let grace = grace.min(std::time::Duration::from_secs(10));
    tokio::task::spawn_blocking(move || crate::actions::support::process::end_orphans(&keys, grace))
        .await
        .unwrap_or_default()
}

/// The keys of the attempts the log says were running or cut short, compensations included.
pub(super) fn attempts_left_running(st: &RunState, run_id: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for (id, r) in &st.steps {
        if let StepState::Running { attempt } | StepState::Interrupted { attempt } = r.state {
            keys.push(format!("{run_id}/{id}/{attempt}"));
        }
        if let Some(super::state::CompensationRecord::Running { attempt }) = r.compensation {
            keys.push(format!("{run_id}/{id}/compensate/{attempt}"));
        }
    }
    keys
}

/// What `reason` adds about an attempt's processes that outlived their lifeboat.
pub(super) fn orphans_ended(o: &crate::actions::support::process::Orphans) -> String {
    let groups: Vec<String> = o.groups.iter().map(i32::to_string).collect();
    format!(
        "; {} of its processes were still running and were ended (process group {})",
        o.processes,
        groups.join(", ")
    )
}

/// Asks the process driving `run_id` on this host to stop, as Ctrl-C does (it finishes or
/// cancels what runs, records the run as interrupted and pauses its locks), and waits until it
/// has let go of the run. A run driven on another host is that host's to stop.
#[allow(unsafe_code)]
async fn stop_driver(store: &Store, run_id: &str, grace: std::time::Duration) -> Result<Driver> {
    let text = store.read_log(run_id).await.map_err(Error::Failed)?;
    let events = parse_log(&String::from_utf8_lossy(&text)).unwrap_or_default();
    let driver = events.iter().rev().find_map(|r| match &r.event {
        Event::RunStarted { host, pid, .. }
        | Event::RunResumed { host, pid, .. }
        | Event::RunAborted { host, pid, .. } => Some((host.clone(), *pid)),
        _ => None,
    });
    let Some((host, pid)) = driver else {
        return Err(Error::Held(format!(
            "run {run_id} is being driven by another process"
        )));
    };
    if host != store::hostname() {
        return Err(Error::Held(format!(
            "run {run_id} is being driven on host {host} (pid {pid}); stop it there, then abort it"
        )));
    }
    // SAFETY: SIGINT asks the process to stop; the pid is the one the run's log names as its
    // driver, and the store's lock says a process still drives it.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    // Its grace period, the KILL after it, and a moment to write its last lines.
    let until = tokio::time::Instant::now() + grace + std::time::Duration::from_secs(15);
    loop {
        match store.drive(run_id).await {
            Ok(d) => return Ok(d),
            Err(e) if tokio::time::Instant::now() >= until => {
                return Err(Error::Held(format!(
                    "{e}; it was asked to stop (SIGINT to pid {pid}) and has not yet"
                )));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}
