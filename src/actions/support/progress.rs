//! Where a long transfer stands: bytes so far, throughput and, where the total is known, how
//! long is left, reported as the step's progress (`step_progress`: the live view's line, a
//! `--json` event, a line of the run log) at most every `LIFEBOAT_PROGRESS_EVERY` (10s).
//!
//! The engine sets the reporter around each attempt (a task-local, like the attempt's key), so
//! the pipeline reports without every action passing a callback down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    /// How the running attempt reports progress.
    pub static REPORTER: Arc<dyn Fn(&str) + Send + Sync>;
}

/// The least time between two reports of one transfer, unless `LIFEBOAT_PROGRESS_EVERY` says.
const EVERY: Duration = Duration::from_secs(10);

fn every() -> Duration {
    std::env::var("LIFEBOAT_PROGRESS_EVERY")
        .ok()
        .and_then(|v| crate::runbook::duration::parse(&v).ok())
        .unwrap_or(EVERY)
}

/// One transfer's progress: `tick` it with the bytes done so far.
pub struct Meter {
    what: &'static str,
    total: Option<u64>,
    started: Instant,
    every: Duration,
    last: Mutex<Instant>,
}

impl Meter {
    /// `what` is the verb ("uploaded", "downloaded"); `total` the bytes expected, if known.
    pub fn new(what: &'static str, total: Option<u64>) -> Meter {
        let now = Instant::now();
        Meter {
            what,
            total,
            started: now,
            every: every(),
            last: Mutex::new(now),
        }
    }

    /// Reports `done` bytes, if the last report is old enough and an attempt is listening.
    pub fn tick(&self, done: u64) {
        let now = Instant::now();
        {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(*last) < self.every {
                return;
            }
            *last = now;
        }
        let line = self.line(done, now.duration_since(self.started));
        let _ = REPORTER.try_with(|say| say(&line));
    }

    /// "uploaded 1.2 GiB of 3.4 GiB (35%), 48.1 MiB/s, about 46s left".
    fn line(&self, done: u64, elapsed: Duration) -> String {
        let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
        let mut s = format!("{} {}", self.what, size(done as f64));
        if let Some(total) = self.total.filter(|&t| t > 0) {
            let pct = (done as f64 * 100.0 / total as f64).min(100.0);
            s.push_str(&format!(" of {} ({pct:.0}%)", size(total as f64)));
        }
        s.push_str(&format!(", {}/s", size(rate)));
        if let Some(total) = self.total
            && rate > 0.0
            && total > done
        {
            let left = Duration::from_secs_f64((total - done) as f64 / rate);
            s.push_str(&format!(
                ", about {} left",
                crate::runbook::duration::format(Duration::from_secs(left.as_secs().max(1)))
            ));
        }
        s
    }
}

/// Bytes in binary units, one decimal: "512 B", "1.5 KiB", "48.1 MiB".
fn size(b: f64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024.0 {
        return format!("{b:.0} B");
    }
    let mut v = b / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_transfer_reports_bytes_rate_and_time_left_at_most_every_ten_seconds() {
        let said: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = said.clone();
        let say: Arc<dyn Fn(&str) + Send + Sync> =
            Arc::new(move |m: &str| log.lock().unwrap().push(m.to_string()));
        REPORTER
            .scope(say, async {
                let m = Meter::new("downloaded", Some(400 << 20));
                m.tick(1 << 20); // at once: too soon
                tokio::time::advance(Duration::from_secs(10)).await;
                m.tick(100 << 20);
                tokio::time::advance(Duration::from_secs(3)).await;
                m.tick(130 << 20); // 3 s after the last report: too soon
                tokio::time::advance(Duration::from_secs(7)).await;
                m.tick(200 << 20);
            })
            .await;
        assert_eq!(
            *said.lock().unwrap(),
            [
                "downloaded 100.0 MiB of 400.0 MiB (25%), 10.0 MiB/s, about 30s left",
                "downloaded 200.0 MiB of 400.0 MiB (50%), 10.0 MiB/s, about 20s left",
            ]
        );
        // Without a total: no share, no time left; outside an attempt: nobody to tell.
        let m = Meter::new("uploaded", None);
        assert_eq!(
            m.line(3 << 30, Duration::from_secs(60)),
            "uploaded 3.0 GiB, 51.2 MiB/s"
        );
        m.tick(1);
        assert_eq!(size(512.0), "512 B");
    }
}
