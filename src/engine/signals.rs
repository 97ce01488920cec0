//! What interrupts a run: SIGINT, SIGTERM and SIGHUP for real runs, a channel in the engine's
//! tests.

use std::future::Future;
use std::pin::Pin;

/// A stream of interrupts, each in words: a signal by name (`SIGINT`), or what else stops a run
/// (the loss of a lock).
pub trait Signals: Send {
    /// The next interrupt; pending forever when none can come.
    fn recv(&mut self) -> Pin<Box<dyn Future<Output = String> + Send + '_>>;
}

/// SIGINT, SIGTERM and SIGHUP, as one stream. SIGHUP is what a dropped SSH session or a closed
/// terminal sends: left to its default it would end the engine with nothing recorded and the
/// running step's child (in its own process group, so the hangup never reaches it) orphaned.
/// The handlers are installed when the run loop first listens: until then (while a run is being
/// set up) the signals end the process as usual.
#[derive(Default)]
pub struct OsSignals {
    installed: bool,
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals for OsSignals {
    fn recv(&mut self) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(async move {
            if !self.installed {
                use tokio::signal::unix::{SignalKind, signal};
                self.installed = true;
                self.int = signal(SignalKind::interrupt()).ok();
                self.term = signal(SignalKind::terminate()).ok();
                self.hup = signal(SignalKind::hangup()).ok();
            }
            let name = tokio::select! {
                _ = next(&mut self.int) => "SIGINT",
                _ = next(&mut self.term) => "SIGTERM",
                _ = next(&mut self.hup) => "SIGHUP",
            };
            name.to_string()
        })
    }
}

/// The next delivery of one signal; pending forever when its handler could not be installed.
async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// A run's signals, and the loss of one of its locks as one more interrupt. Every half second
/// the locks are checked and repaired (a lock file deleted while held is put back); one that
/// another process now holds interrupts the run once, as SIGTERM would: no new step starts.
pub struct Watched<'a> {
    pub signals: &'a mut dyn Signals,
    pub locks: &'a mut crate::store::LockSet,
    pub lost: bool,
}

/// How often a run's locks are checked.
const LOCK_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

impl Signals for Watched<'_> {
    fn recv(&mut self) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(async move {
            let signals = &mut *self.signals;
            let locks = &mut *self.locks;
            let lost = &mut self.lost;
            let watch = async {
                if *lost {
                    return std::future::pending().await;
                }
                loop {
                    tokio::time::sleep(LOCK_CHECK).await;
                    if let Err(e) = locks.keep() {
                        *lost = true;
                        return format!("the loss of {e}");
                    }
                }
            };
            tokio::select! {
                sig = signals.recv() => sig,
                why = watch => why,
            }
        })
    }
}
