//! `-v` and `RUST_LOG`: the diagnostics of lifeboat and of the clients it drives (kube, the AWS
//! SDK, hyper, tokio-postgres), on stderr. They say why a connection failed, which a step's one
//! error line cannot. Each line goes through every live secrets masker on its way out: a client
//! that logs a request may log a secret in it. Without either, nothing is installed and stderr
//! is exactly the reporter's.

use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the subscriber: `RUST_LOG` when set (e.g. `kube=debug,tokio_postgres=debug`),
/// else `-v` info, `-vv` debug, `-vvv` trace.
pub(super) fn init(verbose: u8) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(f) => f,
            Err(e) => {
                errln!("warning: RUST_LOG={spec}: {e}; showing warnings only");
                EnvFilter::new("warn")
            }
        },
        _ => match verbose {
            0 => return,
            1 => EnvFilter::new("info"),
            2 => EnvFilter::new("debug"),
            _ => EnvFilter::new("trace"),
        },
    };
    // No colors: a line is masked and made printable as text, and a server's error message in it
    // must not carry escape sequences to the terminal.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Masked)
        .with_ansi(false)
        .try_init();
}

/// Makes a [`Line`] per event.
struct Masked;

impl<'a> MakeWriter<'a> for Masked {
    type Writer = Line;
    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

/// One event's text, held until it is whole, then masked and written to stderr at once.
struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let text = crate::engine::secrets::scrub_diagnostics(&String::from_utf8_lossy(&self.0));
        let text = crate::text::printable(&text, true);
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}
