//! What interrupts a run: SIGINT and SIGTERM for real runs, a channel in the engine's tests.

use std::future::Future;
use std::pin::Pin;

/// A stream of interrupt signals, by name.
pub trait Signals: Send {
    /// The next signal's name (`SIGINT`); pending forever when none can come.
    fn recv(&mut self) -> Pin<Box<dyn Future<Output = &'static str> + Send + '_>>;
}

/// SIGINT and SIGTERM, as one stream. The handlers are installed when the run loop first
/// listens: until then (while a run is being set up) the signals end the process as usual.
#[derive(Default)]
pub struct OsSignals {
    installed: bool,
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals for OsSignals {
    fn recv(&mut self) -> Pin<Box<dyn Future<Output = &'static str> + Send + '_>> {
        Box::pin(async move {
            if !self.installed {
                use tokio::signal::unix::{SignalKind, signal};
                self.installed = true;
                self.int = signal(SignalKind::interrupt()).ok();
                self.term = signal(SignalKind::terminate()).ok();
            }
            let int = async {
                match &mut self.int {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let term = async {
                match &mut self.term {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = int => "SIGINT",
                _ = term => "SIGTERM",
            }
        })
    }
}
