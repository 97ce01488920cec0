//! Per-step engine overhead with the durable run log on: 1,000 sequential no-op steps (a chain)
//! and 1,000 independent ones, against the cost of one fsync on the same disk. Prints a table;
//! asserts nothing. Target (issue 3): sequential steps within 1.5 fsync of the floor per step,
//! and parallel steps sharing fsyncs (group commit).
//!
//!     cargo bench --bench engine_overhead

#![allow(clippy::print_stdout, clippy::print_stderr)] // a bench prints its table

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat::engine::signals::OsSignals;
use lifeboat::engine::{
    Event, Live, NewRun, NoPrompter, Notice, Options, RunStatus, Session, Sink, Wiring,
};
use lifeboat::store::Store;

struct Null;
impl Sink for Null {
    fn event(&self, _: u64, _: &str, _: &Event) {}
    fn notice(&self, _: &Notice) {}
}

fn runbook(n: usize, chain: bool) -> String {
    let mut s = String::from(
        "apiVersion: lifeboat/v1\nkind: Runbook\nmetadata: {name: bench, version: 1.0.0}\nsteps:\n",
    );
    for i in 0..n {
        let needs = if chain && i > 0 {
            format!(", needs: [s{}]", i - 1)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "  - {{id: s{i}, action: wait{needs}, with: {{for: 0s}}}}\n"
        ));
    }
    s
}

/// Median time of one append + fdatasync of a run-log-sized line.
fn fsync_floor(dir: &std::path::Path) -> Duration {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let line = [b'x'; 300];
    let mut times = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        f.write_all(&line).unwrap();
        f.sync_data().unwrap();
        times.push(t.elapsed());
    }
    let _ = std::fs::remove_file(&path);
    times.sort();
    times[times.len() / 2]
}

struct Result {
    total: Duration,
    lines: u64,
    fsyncs: u64,
}

/// One run through the whole session (a state folder, `run_started`, the steps, the head
/// anchor), as `lifeboat run` does it, timed from start to end.
fn run_once(dir: &std::path::Path, text: &str, max_parallel: usize) -> Result {
    let rb = lifeboat::runbook::load_str("bench.yaml", text)
        .result
        .expect("the bench runbook is valid");
    let n = rb.steps.len();
    let state = dir.join(format!("state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(Store::open(state.to_str().unwrap()))
        .expect("a state folder");
    let session = Session {
        store: &store,
        opts: Options {
            max_parallel,
            yes: true,
            timeout: None,
            grace: Duration::from_secs(1),
            operator: "bench".into(),
            state: None,
        },
        wiring: Wiring {
            sink: Arc::new(Null),
            prompter: Arc::new(NoPrompter),
            http: reqwest::Client::new(),
            runner: Arc::new(Live),
            signals: Box::new(OsSignals::default()),
        },
    };
    let params = Default::default();
    let t = Instant::now();
    let ended = rt
        .block_on(async {
            let new = NewRun {
                file: std::path::Path::new("bench.yaml"),
                text: text.as_bytes(),
                runbook: &rb,
                params: &params,
                drill: None,
                parent: None,
            };
            session.start(new).await?.drive().await
        })
        .unwrap();
    let total = t.elapsed();
    assert_eq!(ended.status, RunStatus::Succeeded);
    // run_started, each step's started and succeeded, run_finished.
    assert_eq!(ended.log.lines as usize, 2 * n + 2);
    drop(store);
    let _ = std::fs::remove_dir_all(&state);
    Result {
        total,
        lines: ended.log.lines,
        fsyncs: ended.log.fsyncs,
    }
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // LIFEBOAT_BENCH_DIR=/dev/shm measures the engine without a disk (fsync costs nothing there).
    let dir = std::env::var_os("LIFEBOAT_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
        .join("engine-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let floor = fsync_floor(&dir);
    println!(
        "one append + fdatasync on this disk (median of 300): {:.2} ms",
        ms(floor)
    );
    println!();
    println!(
        "{:<28} {:>6} {:>10} {:>12} {:>8} {:>13} {:>16}",
        "shape", "steps", "total", "per step", "fsyncs", "fsyncs/step", "per step/fsync"
    );
    for (name, chain, par) in [
        ("sequential (chain)", true, 8),
        ("parallel, --max-parallel 8", false, 8),
        ("parallel, --max-parallel 1000", false, 1000),
    ] {
        let text = runbook(1000, chain);
        let mut runs: Vec<Result> = (0..3).map(|_| run_once(&dir, &text, par)).collect();
        runs.sort_by_key(|r| r.total);
        let r = &runs[1];
        let per = r.total / 1000;
        println!(
            "{:<28} {:>6} {:>8.0}ms {:>10.3}ms {:>8} {:>13.3} {:>16.2}",
            name,
            1000,
            ms(r.total),
            ms(per),
            r.fsyncs,
            r.fsyncs as f64 / 1000.0,
            per.as_secs_f64() / floor.as_secs_f64()
        );
        let _ = r.lines;
    }
    println!();
    println!(
        "per step/fsync: a step's time in units of one fsync. Sequential steps each need one durable"
    );
    println!("`step_started` before they start, so 1.0 is the floor; parallel steps share syncs.");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
