//! Running a validated runbook: the DAG on tokio, attempts with retries and timeouts, approval
//! gates, rollback through `compensate`, and resumption from the run log.
//!
//! Invariants:
//! - The engine never prints. Everything it does is an [`Event`]: written to the run log, folded
//!   into [`RunState`], and handed to a [`Sink`] (the CLI's reporter), in that order, under one lock.
//! - An event is durable before the side effect it announces starts: a step's attempt begins only
//!   after its `step_started` line is fsynced.
//! - No event leaves the engine unmasked: the [`Masker`] scrubs each one before anything sees it.

pub mod context;
pub mod event;
mod inputs;
pub mod preview;
mod run;
pub mod secrets;
pub mod session;
pub mod signals;
pub mod state;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use event::{ApprovalVia, Event, Recorded, RunStatus, parse_log};
pub use secrets::Masker;
pub use session::{Ended, NewRun, Ready, Resumed, Session, Wiring};
pub use state::{RunState, StepState};

use crate::actions::{Action, ActionFuture, Exec};
use crate::runlog::LogWriter;

/// How a run behaves, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub max_parallel: usize,
    /// Answer approval gates (and re-runs of interrupted steps) without asking; recorded as such.
    pub yes: bool,
    /// The whole run's deadline, per process.
    pub timeout: Option<Duration>,
    /// After the first SIGINT/SIGTERM/SIGHUP, how long running steps may take to finish before they are
    /// cancelled.
    pub grace: Duration,
    pub operator: String,
    /// The state store as `--state` named it, for child runs (`action: runbook`).
    pub state: Option<String>,
}

/// A question for the operator.
#[derive(Debug, Clone)]
pub struct Question {
    pub step: String,
    pub message: String,
    /// What runs once it is answered yes.
    pub next: Vec<String>,
}

/// Asks the operator. `None`: nobody can be asked here (no terminal, `--non-interactive`).
pub trait Prompter: Send + Sync {
    fn ask(&self, q: Question) -> Pin<Box<dyn Future<Output = Option<bool>> + Send>>;
}

/// A prompter for runs without a terminal.
pub struct NoPrompter;

impl Prompter for NoPrompter {
    fn ask(&self, _: Question) -> Pin<Box<dyn Future<Output = Option<bool>> + Send>> {
        Box::pin(async { None })
    }
}

/// Receives every event once it is in the log, and what the operator should know besides.
pub trait Sink: Send + Sync {
    fn event(&self, seq: u64, ts: &str, event: &Event);
    fn notice(&self, notice: &Notice);
}

/// Something the operator should know that is not part of the run's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A torn last line, written during a crash, was cut off the log before continuing it.
    TornLineRemoved,
    /// The head anchor could not be written, so a rewritten last line would not show.
    HeadNotWritten(String),
}

/// Runs an attempt of an action: the engine's one way to touch the world. [`Live`] runs the
/// action itself; the engine's tests script outcomes instead.
pub trait Runner: Send + Sync {
    fn execute<'a>(&'a self, action: &'a Action, cx: &'a Exec<'a>) -> ActionFuture<'a>;
}

/// Runs actions for real.
pub struct Live;

impl Runner for Live {
    fn execute<'a>(&'a self, action: &'a Action, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        action.execute(cx)
    }
}

/// A fatal problem: the run cannot go on and cannot record why.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Log(String),
}

/// Writes events: mask, append, fold, report — one at a time, in one order for all four.
pub struct Emitter {
    writer: LogWriter,
    masker: Arc<Masker>,
    state: Mutex<RunState>,
    sink: Arc<dyn Sink>,
}

impl Emitter {
    pub fn new(
        writer: LogWriter,
        masker: Arc<Masker>,
        state: RunState,
        sink: Arc<dyn Sink>,
    ) -> Emitter {
        Emitter {
            writer,
            masker,
            state: Mutex::new(state),
            sink,
        }
    }

    /// Appends an event; returns its seq. It is written but not yet durable.
    pub fn emit(&self, event: Event) -> Result<u64, EngineError> {
        self.emit_if(event, |_| true)
            .map(|seq| seq.expect("always allowed"))
    }

    /// Appends an event if `allow` says so of the state it would follow, decided under the
    /// same lock that appends: no other event can come between.
    pub fn emit_if(
        &self,
        event: Event,
        allow: impl FnOnce(&RunState) -> bool,
    ) -> Result<Option<u64>, EngineError> {
        let mut map = event.to_map();
        let event = if self.masker.is_empty() {
            event
        } else {
            // Text and data only: the structure of the event is never a place a secret goes.
            for (k, v) in map.iter_mut() {
                if event::TEXT.contains(&k.as_str()) {
                    self.masker.scrub_value(v);
                }
            }
            // Fold what was written, not what was meant: a resumed run must see the same.
            serde_json::from_value(serde_json::Value::Object(map.clone()))
                .map_err(|e| EngineError::Log(format!("a masked event no longer parses: {e}")))?
        };
        let mut st = self.state.lock().expect("state lock");
        if !allow(&st) {
            return Ok(None);
        }
        let (seq, ts) = self.writer.append(&map).map_err(EngineError::Log)?;
        st.apply(seq, &ts, &event);
        self.sink.event(seq, &ts, &event);
        Ok(Some(seq))
    }

    /// Appends an event and waits until it is on disk.
    pub async fn emit_durable(&self, event: Event) -> Result<u64, EngineError> {
        let seq = self.emit(event)?;
        self.writer.durable(seq).await.map_err(EngineError::Log)?;
        Ok(seq)
    }

    /// [`Emitter::emit_if`], then waits until the event, if appended, is on disk.
    pub async fn emit_durable_if(
        &self,
        event: Event,
        allow: impl FnOnce(&RunState) -> bool,
    ) -> Result<Option<u64>, EngineError> {
        let Some(seq) = self.emit_if(event, allow)? else {
            return Ok(None);
        };
        self.writer.durable(seq).await.map_err(EngineError::Log)?;
        Ok(Some(seq))
    }

    pub async fn flush(&self) -> Result<(), EngineError> {
        let (last, _) = self.writer.last();
        self.writer.durable(last).await.map_err(EngineError::Log)
    }

    pub fn notice(&self, notice: &Notice) {
        self.sink.notice(notice);
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.state.lock().expect("state lock")
    }

    pub fn writer(&self) -> &LogWriter {
        &self.writer
    }
}
