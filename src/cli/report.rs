//! Reporters: how a run's events look to people (stderr) and programs (`--json`, stdout), and
//! the terminal prompt for approvals.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use crate::engine::{Event, Notice, Prompter, Question, Sink};

/// One line, in words, for an event; shared by the live view and `lifeboat log`.
pub fn describe(e: &Event) -> String {
    match e {
        Event::RunStarted {
            run,
            runbook,
            version,
            operator,
            host,
            yes,
            ..
        } => {
            let yes = if *yes { " with --yes" } else { "" };
            format!("run {run} of {runbook} {version} started by {operator} on {host}{yes}")
        }
        Event::RunResumed {
            operator,
            host,
            yes,
            ..
        } => {
            let yes = if *yes { " with --yes" } else { "" };
            format!("resumed by {operator} on {host}{yes}")
        }
        Event::LockTakenOver {
            lock,
            from_run,
            from_pid,
        } => {
            format!("lock `{lock}` taken over from run {from_run} (its process {from_pid} is gone)")
        }
        Event::StepStarted {
            step,
            attempt,
            action,
            ..
        } => {
            format!("▶ {step} ({action}{})", later_attempt(*attempt))
        }
        Event::StepAttemptFailed {
            step,
            attempt,
            error,
            retry_in_ms,
            ..
        } => {
            format!(
                "↻ {step} attempt {attempt} failed: {error}{}",
                retrying(*retry_in_ms)
            )
        }
        Event::StepSucceeded {
            step, elapsed_ms, ..
        } => format!("✓ {step} ({})", ms_text(*elapsed_ms)),
        Event::StepFailed {
            step,
            error,
            continued,
            ..
        } => {
            let c = if *continued {
                " (on_failure: continue)"
            } else {
                ""
            };
            format!("✗ {step} failed{c}: {error}")
        }
        Event::StepSkipped { step, reason, .. } => format!("- {step} skipped: {reason}"),
        Event::StepProgress { step, message, .. } => format!("  {step}: {message}"),
        Event::StepNoted {
            step, key, value, ..
        } => format!("  {step}: noted {key} = {value}"),
        Event::StepInterrupted {
            step,
            attempt,
            reason,
        } => format!("! {step} attempt {attempt} interrupted: {reason}"),
        Event::ApprovalRequested {
            step,
            message,
            next,
            ..
        } => {
            let then = if next.is_empty() {
                String::new()
            } else {
                format!(" (then: {})", next.join(", "))
            };
            format!("? {step}: {message}{then}")
        }
        Event::ApprovalGranted { step, by, via } => {
            let how = match via {
                crate::engine::ApprovalVia::Prompt => "at the prompt",
                crate::engine::ApprovalVia::Command => "with `lifeboat approve`",
                crate::engine::ApprovalVia::YesFlag => "by --yes, without asking",
            };
            format!("✓ {step} approved by {by} {how}")
        }
        Event::ApprovalDenied { step, by } => format!("✗ {step} declined by {by}"),
        Event::RollbackStarted { reason, steps } => {
            format!("⟲ rolling back ({reason}): {}", steps.join(", "))
        }
        Event::CompensationStarted {
            step,
            action,
            attempt,
            ..
        } => {
            format!(
                "⟲ compensating {step} ({action}{})",
                later_attempt(*attempt)
            )
        }
        Event::CompensationAttemptFailed {
            step,
            attempt,
            error,
            retry_in_ms,
            ..
        } => {
            format!(
                "↻ compensation of {step} attempt {attempt} failed: {error}{}",
                retrying(*retry_in_ms)
            )
        }
        Event::CompensationSucceeded { step, .. } => format!("✓ {step} compensated"),
        Event::CompensationFailed { step, error, .. } => {
            format!("✗ compensation of {step} failed: {error}")
        }
        Event::RollbackFinished {
            compensated,
            failed,
        } => {
            format!(
                "⟲ rollback finished: {} compensated, {} failed",
                compensated.len(),
                failed.len()
            )
        }
        Event::RunAborted {
            by,
            reason,
            rollback,
            ..
        } => format!(
            "■ aborted by {by}{}{}",
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            if *rollback { "; rolling back" } else { "" }
        ),
        Event::HandlersStarted { status, steps, .. } => {
            format!("⚑ run {}; running {}", status.as_str(), steps.join(", "))
        }
        Event::RunFinished {
            status, summary, ..
        } => format!("run {}: {summary}", status.as_str()),
    }
}

/// `, attempt N` after the first attempt, nothing for the first.
fn later_attempt(attempt: u32) -> String {
    if attempt > 1 {
        format!(", attempt {attempt}")
    } else {
        String::new()
    }
}

fn retrying(retry_in_ms: Option<u64>) -> String {
    retry_in_ms
        .map(|ms| format!("; retrying in {}", ms_text(ms)))
        .unwrap_or_default()
}

pub fn ms_text(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// A notice as the operator reads it, on stderr.
fn notice_text(n: &Notice) -> String {
    match n {
        Notice::TornLineRemoved => {
            "note: removed the log's incomplete last line (written during a crash)".into()
        }
        Notice::HeadNotWritten(e) => format!("warning: {e}"),
    }
}

/// Notices only: for commands that record an event of their own and say so in their own words
/// (`approve`).
pub struct NoticeSink;

impl Sink for NoticeSink {
    fn event(&self, _: u64, _: &str, _: &Event) {}
    fn notice(&self, n: &Notice) {
        errln!("{}", notice_text(n));
    }
}

/// `--json`: each event as a JSON line on stdout (the run log's line without `prev` and `hash`).
pub struct JsonSink;

impl Sink for JsonSink {
    fn event(&self, seq: u64, ts: &str, event: &Event) {
        let mut m = serde_json::Map::new();
        m.insert("seq".into(), seq.into());
        m.insert("ts".into(), ts.into());
        m.extend(event.to_map());
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", serde_json::Value::Object(m));
        let _ = out.flush();
    }
    fn notice(&self, n: &Notice) {
        errln!("{}", notice_text(n));
    }
}

/// Progress on stderr: a line per event; on a terminal, also a footer of the running steps
/// with their attempt and elapsed time, redrawn while they run.
pub struct HumanSink {
    inner: Arc<Mutex<Live>>,
}

struct Live {
    live: bool,
    running: IndexMap<String, (u32, Instant)>,
    footer: usize,
    /// A prompt owns the terminal.
    paused: bool,
}

impl Live {
    fn clear(&mut self, err: &mut impl Write) {
        if self.footer > 0 {
            let _ = write!(err, "\x1b[{}A\x1b[J", self.footer);
            self.footer = 0;
        }
    }
    fn draw(&mut self, err: &mut impl Write) {
        if !self.live || self.paused {
            return;
        }
        for (step, (attempt, since)) in &self.running {
            let a = if *attempt > 1 {
                format!(" attempt {attempt}")
            } else {
                String::new()
            };
            let _ = writeln!(
                err,
                "  … {step}{a} {}",
                ms_text(since.elapsed().as_millis() as u64)
            );
        }
        self.footer = self.running.len();
    }
}

impl HumanSink {
    pub fn new(live: bool) -> HumanSink {
        let inner = Arc::new(Mutex::new(Live {
            live,
            running: IndexMap::new(),
            footer: 0,
            paused: false,
        }));
        if live {
            let weak = Arc::downgrade(&inner);
            std::thread::spawn(move || {
                while let Some(inner) = weak.upgrade() {
                    {
                        let mut l = inner.lock().expect("live lock");
                        if !l.running.is_empty() && !l.paused {
                            let mut err = std::io::stderr().lock();
                            l.clear(&mut err);
                            l.draw(&mut err);
                        }
                    }
                    drop(inner);
                    std::thread::sleep(Duration::from_millis(250));
                }
            });
        }
        HumanSink { inner }
    }

    pub fn prompter(&self) -> TtyPrompter {
        TtyPrompter {
            inner: self.inner.clone(),
        }
    }
}

impl Sink for HumanSink {
    fn event(&self, _seq: u64, ts: &str, event: &Event) {
        let mut l = self.inner.lock().expect("live lock");
        match event {
            Event::StepStarted { step, attempt, .. }
            | Event::CompensationStarted { step, attempt, .. } => {
                l.running.insert(step.clone(), (*attempt, Instant::now()));
            }
            Event::StepAttemptFailed { .. } | Event::CompensationAttemptFailed { .. } => {}
            other => {
                if let Some(s) = other.step() {
                    l.running.shift_remove(s);
                }
            }
        }
        let mut err = std::io::stderr().lock();
        l.clear(&mut err);
        let time = ts.get(11..19).unwrap_or(ts);
        // Errors and outputs come from commands and servers: shown, never obeyed.
        let line = describe(event);
        let _ = writeln!(err, "{time} {}", crate::text::printable(&line, true));
        l.draw(&mut err);
    }
    fn notice(&self, n: &Notice) {
        let mut l = self.inner.lock().expect("live lock");
        let mut err = std::io::stderr().lock();
        l.clear(&mut err);
        let _ = writeln!(err, "{}", notice_text(n));
        l.draw(&mut err);
    }
}

/// Asks approvals on the terminal.
pub struct TtyPrompter {
    inner: Arc<Mutex<Live>>,
}

impl Prompter for TtyPrompter {
    fn ask(
        &self,
        q: Question,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<bool>> + Send>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                // One question at a time; other steps keep running and printing meanwhile, so the
                // terminal lock is not held while waiting for the answer.
                static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
                let _turn = ONE_AT_A_TIME.lock().expect("prompt lock");
                {
                    let mut l = inner.lock().expect("live lock");
                    l.paused = true;
                    let mut err = std::io::stderr().lock();
                    l.clear(&mut err);
                    let then = if q.next.is_empty() {
                        String::new()
                    } else {
                        format!("\n  next: {}", q.next.join(", "))
                    };
                    let _ = write!(
                        err,
                        "\n? {}: {}{then}\n  approve? [y/N] ",
                        q.step,
                        crate::text::printable(&q.message, true)
                    );
                    let _ = err.flush();
                }
                let mut line = String::new();
                let answer = match std::io::stdin().read_line(&mut line) {
                    Ok(0) | Err(_) => None,
                    Ok(_) => Some(matches!(
                        line.trim().to_ascii_lowercase().as_str(),
                        "y" | "yes"
                    )),
                };
                inner.lock().expect("live lock").paused = false;
                answer
            })
            .await
            .ok()
            .flatten()
        })
    }
}
