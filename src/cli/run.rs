//! `lifeboat run`, `resume` and `approve`: everything that drives or changes a run.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;

use super::report::{HumanSink, JsonSink};
use super::{DiagnosticFormat, parse_params, validate::print};
use crate::engine::context::RunScope;
use crate::engine::{
    self, Emitter, Engine, Event, Masker, NoPrompter, Prompter, RunState, RunStatus, Sink,
    StepState,
};
use crate::exit::Exit;
use crate::runbook::{ValidRunbook, load_file, params};
use crate::runlog;
use crate::store::{self, Holder, LockError, LockSet, LockState, Store};

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
    /// After Ctrl-C or SIGTERM, how long running steps may take to finish before they are cancelled.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub grace: String,
    /// Stream events as JSON lines on stdout instead of the run id.
    #[arg(long)]
    pub json: bool,
    /// Who is running this (recorded); defaults to $LIFEBOAT_OPERATOR, then $USER.
    #[arg(long, env = "LIFEBOAT_OPERATOR")]
    pub operator: Option<String>,
}

pub fn operator(given: Option<String>) -> String {
    given
        .filter(|o| !o.is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| format!("uid {}", unsafe_uid()))
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

fn duration_arg(flag: &str, text: &str) -> Result<Duration, Exit> {
    crate::runbook::duration::parse(text).map_err(|e| {
        eprintln!("error: --{flag} {text}: {e}");
        Exit::Invalid
    })
}

async fn open_store(spec: &str) -> Result<Store, Exit> {
    Store::open(spec).await.map_err(|e| {
        eprintln!("error: {e}");
        Exit::Failed
    })
}

/// The engine's non-negotiables that do not depend on the runbook.
struct Prepared {
    opts: engine::Options,
    sink: Arc<dyn Sink>,
    prompter: Arc<dyn Prompter>,
    http: reqwest::Client,
}

fn prepare(d: &Driving) -> Result<Prepared, Exit> {
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
    let http = http_client()?;
    Ok(Prepared {
        opts: engine::Options {
            max_parallel: d.max_parallel as usize,
            yes: d.yes,
            timeout,
            grace,
            operator: operator(d.operator.clone()),
        },
        sink,
        prompter,
        http,
    })
}

/// Refuses a runbook with a step this version cannot run, before anything starts.
fn check_runnable(rb: &ValidRunbook) -> Result<(), Exit> {
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
    eprintln!("error: this version of lifeboat cannot run this runbook; nothing was started:");
    for m in missing {
        eprintln!("  - {m} (see docs/roadmap.md)");
    }
    Err(Exit::Invalid)
}

/// The HTTP client actions share, on the process's one TLS provider: ring (see DEPENDENCIES.md).
pub(super) fn http_client() -> Result<reqwest::Client, Exit> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("lifeboat/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            eprintln!("error: cannot set up the HTTP client: {e}");
            Exit::Failed
        })
}

pub(super) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

fn lock_error(e: LockError) -> Exit {
    eprintln!("error: {e}");
    match e {
        LockError::Held { .. } | LockError::Paused { .. } => Exit::LockHeld,
        LockError::Io { .. } | LockError::Store { .. } => Exit::Failed,
    }
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

pub(super) fn fail(e: impl std::fmt::Display) -> Exit {
    eprintln!("error: {e}");
    Exit::Failed
}

pub(super) fn run(file: &Path, given: &[String], d: &Driving) -> Exit {
    match run_inner(file, given, d) {
        Ok(e) | Err(e) => e,
    }
}

fn run_inner(file: &Path, given: &[String], d: &Driving) -> Result<Exit, Exit> {
    let (text, rb, values) = load_for_run(file, given)?;
    start(file, &text, &rb, &values, d, None, !d.json).map(|s| s.exit)
}

/// A runbook about to run: the file's bytes (stored with the run), the validated runbook and the
/// param values.
pub(super) type ForRun = (Vec<u8>, ValidRunbook, IndexMap<String, serde_json::Value>);

/// Loads, validates and takes the params of a runbook to run; invalid input is printed as
/// diagnostics.
pub(super) fn load_for_run(file: &Path, given: &[String]) -> Result<ForRun, Exit> {
    let given = parse_params(given)?;
    let loaded = load_file(file);
    let rb = match loaded.result {
        Ok(rb) => rb,
        Err(diags) => {
            print(&loaded.source, diags, DiagnosticFormat::Human);
            return Err(Exit::Invalid);
        }
    };
    let values = params::resolve(&rb, &given, true).map_err(|diags| {
        print(&loaded.source, diags, DiagnosticFormat::Human);
        Exit::Invalid
    })?;
    Ok((loaded.source.text.as_bytes().to_vec(), rb, values))
}

/// A run that was started: how it ended, and its id.
pub(super) struct Started {
    pub exit: Exit,
    pub run_id: String,
}

/// Starts and drives a new run of `rb` (validated from `text`, the file's bytes, which are
/// stored with the run). `drill` marks it as a drill in `run_started`.
pub(super) fn start(
    file: &Path,
    text: &[u8],
    rb: &ValidRunbook,
    values: &IndexMap<String, serde_json::Value>,
    d: &Driving,
    drill: Option<Box<crate::drill::DrillInfo>>,
    print_id: bool,
) -> Result<Started, Exit> {
    check_runnable(rb)?;
    let secrets = engine::secrets::resolve(rb).map_err(|e| {
        eprintln!("error: {e}");
        Exit::Invalid
    })?;
    let p = prepare(d)?;
    let text = text.to_vec();
    let rt = runtime();
    rt.block_on(async move {
        let store = open_store(&d.state).await?;
        let run_id = store::new_run_id();
        let locks = store
            .acquire(&rb.locks, &holder(&run_id))
            .await
            .map_err(lock_error)?;
        let writer = store.create_run(&run_id, &text).await.map_err(fail)?;
        let masker = Arc::new(Masker::new(&secrets));
        let state = RunState::new(rb.steps.iter().map(|s| s.id.as_str()));
        let emitter = Arc::new(Emitter::new(writer, masker.clone(), state, p.sink.clone()));
        let started = Event::RunStarted {
            run: run_id.clone(),
            runbook: rb.name.clone(),
            version: rb.version.to_string(),
            file: file.display().to_string(),
            file_sha256: runlog::sha256_hex(&text),
            params: values.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            operator: p.opts.operator.clone(),
            host: store::hostname(),
            pid: std::process::id(),
            lifeboat: env!("CARGO_PKG_VERSION").into(),
            locks: rb.locks.clone(),
            max_parallel: p.opts.max_parallel,
            timeout_ms: p.opts.timeout.map(|t| t.as_millis() as u64),
            yes: d.yes,
            drill,
        };
        emitter.emit_durable(started).await.map_err(fail)?;
        record_takeovers(&emitter, &locks).map_err(fail)?;
        emitter.flush().await.map_err(fail)?;
        // A run exists only once its first line is durable: a crash before leaves nothing.
        store.publish_run(&run_id).await.map_err(fail)?;
        let _driver = store.drive(&run_id).await.map_err(fail)?;
        // The id comes once the run is recorded: a script that has it can always resume it.
        if print_id {
            println!("{run_id}");
        }
        let started_at = emitter.state().started_at.clone();
        let scope = RunScope::new(
            values,
            &secrets,
            run_map(&run_id, &started_at, &p.opts.operator, rb),
        );
        let exit = drive(&store, rb, emitter, scope, masker, p, run_id.clone(), locks).await;
        Ok(Started { exit, run_id })
    })
}

/// Records the locks taken from crashed runs, right after the run (re)starts.
fn record_takeovers(emitter: &Emitter, locks: &LockSet) -> Result<(), engine::EngineError> {
    for (lock, from_run, from_pid) in locks.taken_over() {
        emitter.emit(Event::LockTakenOver {
            lock: lock.clone(),
            from_run: from_run.clone(),
            from_pid: *from_pid,
        })?;
    }
    Ok(())
}

fn run_map(
    id: &str,
    started_at: &str,
    operator: &str,
    rb: &ValidRunbook,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), id.into());
    m.insert("started_at".into(), started_at.into());
    m.insert("operator".into(), operator.into());
    m.insert("runbook".into(), rb.name.clone().into());
    m.insert("version".into(), rb.version.to_string().into());
    m
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    store: &Store,
    rb: &ValidRunbook,
    emitter: Arc<Emitter>,
    scope: RunScope,
    masker: Arc<Masker>,
    p: Prepared,
    run_id: String,
    locks: LockSet,
) -> Exit {
    let engine = Engine::new(
        Arc::new(rb.clone()),
        emitter.clone(),
        scope,
        masker,
        p.http,
        p.opts,
        p.prompter,
        run_id.clone(),
    );
    let result = engine.drive().await;
    let (last, hash) = emitter.writer().last();
    // Anchor the end of the log outside it, so that a rewritten last line shows.
    if let Err(e) = store
        .write_head(
            &run_id,
            &runlog::Head {
                seq: last,
                hash: hash.clone(),
            },
        )
        .await
    {
        eprintln!("warning: {e}");
    }
    match result {
        Ok(status) => {
            match status {
                RunStatus::WaitingForApproval | RunStatus::Interrupted => locks.pause().await,
                _ => locks.release().await,
            }
            eprintln!("run {run_id} {}; log hash {hash}", status.as_str());
            status.exit()
        }
        Err(e) => {
            // Locks stay with the run: its state is whatever the log says, and resume decides.
            locks.pause().await;
            eprintln!("error: run {run_id} stopped: {e}");
            Exit::Failed
        }
    }
}

/// Reads a run back for resume/approve: refuses a tampered log, repairs a torn last line.
async fn load_run(
    store: &Store,
    run_id: &str,
) -> Result<(ValidRunbook, Vec<engine::Recorded>, runlog::Verdict), Exit> {
    store.exists(run_id).await.map_err(|e| {
        eprintln!("error: {e}");
        Exit::Invalid
    })?;
    let mut text = store.read_log(run_id).await.map_err(fail)?;
    if !text.is_empty() && !text.ends_with(b"\n") {
        // A crash during a write: that line was never acknowledged as durable, so nothing it
        // announced was started.
        let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        text.truncate(keep);
        store.cut_log(run_id, keep as u64).await.map_err(fail)?;
        eprintln!("note: removed the log's incomplete last line (written during a crash)");
    }
    let head = store.head(run_id).await.map_err(fail)?;
    let verdict = runlog::verify(&text, head.as_ref());
    if let Some((line, why)) = &verdict.first_bad {
        eprintln!(
            "error: the run log of {run_id} fails verification at line {line}: {why}; refusing to continue it"
        );
        return Err(Exit::Failed);
    }
    let events = engine::parse_log(&String::from_utf8_lossy(&text)).map_err(fail)?;
    let Some(first) = events.first() else {
        eprintln!(
            "error: run {run_id} stopped before it recorded anything, so nothing ran; start it again with `lifeboat run`"
        );
        return Err(Exit::Failed);
    };
    let Event::RunStarted {
        file_sha256,
        file,
        drill,
        ..
    } = &first.event
    else {
        eprintln!("error: run {run_id}'s log does not begin with run_started");
        return Err(Exit::Failed);
    };
    let bytes = store.runbook(run_id).await.map_err(fail)?;
    if &runlog::sha256_hex(&bytes) != file_sha256 {
        eprintln!(
            "error: the runbook stored with run {run_id} is not the one it started with; refusing to continue it"
        );
        return Err(Exit::Failed);
    }
    let loaded = crate::runbook::load_str(file, &String::from_utf8_lossy(&bytes));
    let rb = match loaded.result {
        Ok(rb) => rb,
        Err(diags) => {
            print(&loaded.source, diags, DiagnosticFormat::Human);
            return Err(Exit::Invalid);
        }
    };
    // A drill ran its scenario's steps too: continue the same composition.
    let rb = match drill {
        Some(info) => {
            crate::drill::compose(&rb, &info.scenario)
                .map_err(fail)?
                .runbook
        }
        None => rb,
    };
    Ok((rb, events, verdict))
}

pub(super) fn resume(run_id: &str, d: &Driving) -> Exit {
    let p = match prepare(d) {
        Ok(p) => p,
        Err(e) => return e,
    };
    match runtime().block_on(resume_inner(run_id, d, p)) {
        Ok(e) | Err(e) => e,
    }
}

async fn resume_inner(run_id: &str, d: &Driving, p: Prepared) -> Result<Exit, Exit> {
    let store = open_store(&d.state).await?;
    store.exists(run_id).await.map_err(|e| {
        eprintln!("error: {e}");
        Exit::Invalid
    })?;
    let _driver = store.drive(run_id).await.map_err(|e| {
        eprintln!("error: {e}");
        Exit::LockHeld
    })?;
    let (rb, events, verdict) = load_run(&store, run_id).await?;
    let state = RunState::replay(rb.steps.iter().map(|s| s.id.as_str()), &events);
    if state.status == RunStatus::Succeeded {
        eprintln!("run {run_id} already succeeded; nothing to resume");
        return Ok(Exit::Success);
    }
    check_runnable(&rb)?;
    let values: IndexMap<String, serde_json::Value> = state.params.clone().into_iter().collect();
    let secrets = engine::secrets::resolve(&rb).map_err(|e| {
        eprintln!("error: {e}");
        Exit::Invalid
    })?;
    let locks = store
        .acquire(&rb.locks, &holder(run_id))
        .await
        .map_err(lock_error)?;
    let writer = store
        .log_writer(run_id, verdict.lines, verdict.last_hash.clone())
        .await
        .map_err(fail)?;
    let masker = Arc::new(Masker::new(&secrets));
    let started_at = state.started_at.clone();
    let cut_short: Vec<(String, u32)> = state
        .steps
        .iter()
        .filter_map(|(id, r)| match r.state {
            StepState::Running { attempt } => Some((id.clone(), attempt)),
            _ => None,
        })
        .collect();
    let emitter = Arc::new(Emitter::new(writer, masker.clone(), state, p.sink.clone()));
    let resumed = async {
        emitter
            .emit_durable(Event::RunResumed {
                operator: p.opts.operator.clone(),
                host: store::hostname(),
                pid: std::process::id(),
                yes: d.yes,
            })
            .await?;
        record_takeovers(&emitter, &locks)?;
        for (step, attempt) in cut_short {
            emitter.emit(Event::StepInterrupted {
                step,
                attempt,
                reason: "the process running it stopped before recording how it ended".into(),
            })?;
        }
        emitter.flush().await
    };
    resumed.await.map_err(fail)?;
    if !d.json {
        println!("{run_id}");
    }
    let scope = RunScope::new(
        &values,
        &secrets,
        run_map(run_id, &started_at, &p.opts.operator, &rb),
    );
    Ok(drive(
        &store,
        &rb,
        emitter,
        scope,
        masker,
        p,
        run_id.to_string(),
        locks,
    )
    .await)
}

pub(super) fn approve(run_id: &str, step: &str, state: &str, who: Option<String>) -> Exit {
    match runtime().block_on(approve_inner(run_id, step, state, who)) {
        Ok(e) | Err(e) => e,
    }
}

async fn approve_inner(
    run_id: &str,
    step: &str,
    state_spec: &str,
    who: Option<String>,
) -> Result<Exit, Exit> {
    let store = open_store(state_spec).await?;
    store.exists(run_id).await.map_err(|e| {
        eprintln!("error: {e}");
        Exit::Invalid
    })?;
    let _driver = store.drive(run_id).await.map_err(|e| {
        eprintln!("error: {e}; answer its prompt, or stop it first");
        Exit::LockHeld
    })?;
    let (rb, events, verdict) = load_run(&store, run_id).await?;
    let state = RunState::replay(rb.steps.iter().map(|s| s.id.as_str()), &events);
    let Some(rec) = state.steps.get(step) else {
        let known: Vec<&str> = rb.steps.iter().map(|s| s.id.as_str()).collect();
        eprintln!(
            "error: run {run_id} has no step `{step}`{}",
            crate::diagnostics::did_you_mean(step, known.iter().copied())
                .map(|h| format!("; {h}"))
                .unwrap_or_default()
        );
        return Err(Exit::Invalid);
    };
    let waiting = matches!(
        rec.state,
        StepState::WaitingApproval | StepState::Interrupted { .. }
    );
    if !waiting {
        let what = serde_json::to_value(&rec.state)
            .ok()
            .and_then(|v| v["state"].as_str().map(String::from))
            .unwrap_or_default();
        eprintln!(
            "error: step `{step}` of run {run_id} is not waiting for an approval (it is {what})"
        );
        return Err(Exit::Invalid);
    }
    let by = operator(who);
    let i = rb
        .step_index(step)
        .expect("the state has the runbook's steps");
    if let crate::actions::Action::Approval(a) = &rb.steps[i].action
        && !a.approvers.is_empty()
        && !a.approvers.contains(&by)
    {
        eprintln!(
            "error: `{step}` may be approved only by {}; you are `{by}` (set --operator or $LIFEBOAT_OPERATOR)",
            a.approvers.join(" or ")
        );
        return Err(Exit::Invalid);
    }
    let writer = store
        .log_writer(run_id, verdict.lines, verdict.last_hash)
        .await
        .map_err(fail)?;
    let ev = Event::ApprovalGranted {
        step: step.into(),
        by: by.clone(),
        via: engine::ApprovalVia::Command,
    };
    let (seq, _) = writer.append(&ev.to_map()).map_err(fail)?;
    writer.durable(seq).await.map_err(fail)?;
    let (seq, hash) = writer.last();
    drop(writer);
    if let Err(e) = store.write_head(run_id, &runlog::Head { seq, hash }).await {
        eprintln!("warning: {e}");
    }
    eprintln!("approved `{step}` of run {run_id} as {by}; `lifeboat resume {run_id}` continues it");
    Ok(Exit::Success)
}
