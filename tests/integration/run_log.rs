//! The run log against someone with write access to the state folder: every change to a
//! stopped run's log that the chain alone cannot see is caught by `verify`, refused by `resume`,
//! and flagged by `runs`, `show` and `metrics`. A log and head rewritten together are caught by
//! a hash kept elsewhere (`verify --expect`).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::common;

use common::sandbox::{Sandbox, runbook};

const STEPS: &str = r#"
steps:
  - {id: once, action: shell, with: {script: "echo ran >> once.txt"}}
  - {id: gate, action: approval, needs: [once], with: {message: go}}
"#;

/// Two stopped runs (waiting at their gate, so `resume` would go on), and their log hashes.
fn two_runs() -> (Sandbox, [(String, String); 2]) {
    let sb = Sandbox::new();
    sb.write("r.yaml", &runbook("anchored", STEPS));
    let ids = [(); 2].map(|_| {
        let r = sb.lifeboat(&["run", "r.yaml"]);
        assert_eq!(r.code, 3, "{}", r.stderr);
        let hash = r
            .stderr
            .rsplit("log hash ")
            .next()
            .unwrap()
            .trim()
            .to_string();
        (r.run_id(), hash)
    });
    (sb, ids)
}

fn head(sb: &Sandbox, run: &str) -> PathBuf {
    sb.path(&format!(".lifeboat/heads/{run}.json"))
}

fn run_dir(sb: &Sandbox, run: &str) -> PathBuf {
    sb.path(&format!(".lifeboat/runs/{run}"))
}

/// A well-chained line after the log's end, as a forger with the format in hand writes it.
fn append_forged(sb: &Sandbox, run: &str, event: serde_json::Value) {
    let log = std::fs::read(sb.log_path(run)).unwrap();
    let head = lifeboat::runlog::read_head(&head(sb, run)).unwrap();
    let v = lifeboat::runlog::verify(run, &log, head.as_ref());
    let serde_json::Value::Object(map) = event else {
        unreachable!()
    };
    let line =
        lifeboat::runlog::format_line(v.lines + 1, "2026-11-30T00:00:00.000Z", &map, &v.last_hash);
    let mut text = log;
    text.extend_from_slice(format!("{line}\n").as_bytes());
    std::fs::write(sb.log_path(run), text).unwrap();
}

fn truncate_to_first_line(sb: &Sandbox, run: &str) {
    let log = std::fs::read(sb.log_path(run)).unwrap();
    let first = log.iter().position(|&b| b == b'\n').unwrap() + 1;
    std::fs::write(sb.log_path(run), &log[..first]).unwrap();
}

#[test]
fn every_change_to_a_stopped_runs_log_is_caught_and_refused() {
    type Attack = fn(&Sandbox, &str, &str);
    let attacks: [(&str, Attack); 6] = [
        ("cut short, head deleted", |sb, run, _| {
            truncate_to_first_line(sb, run);
            std::fs::remove_file(head(sb, run)).unwrap();
        }),
        ("cut short, head left", |sb, run, _| {
            truncate_to_first_line(sb, run)
        }),
        ("a forged failure appended after the head", |sb, run, _| {
            append_forged(
                sb,
                run,
                serde_json::json!({"event": "step_failed", "step": "once", "attempt": 1, "error": "forged", "elapsed_ms": 0}),
            );
        }),
        ("a forged approval appended after the head", |sb, run, _| {
            append_forged(
                sb,
                run,
                serde_json::json!({"event": "approval_granted", "step": "gate", "by": "mallory", "via": "command"}),
            );
        }),
        (
            "the two runs' folders and heads swapped",
            |sb, run, other| {
                let tmp = sb.path("swap");
                std::fs::rename(run_dir(sb, run), &tmp).unwrap();
                std::fs::rename(run_dir(sb, other), run_dir(sb, run)).unwrap();
                std::fs::rename(&tmp, run_dir(sb, other)).unwrap();
                std::fs::rename(head(sb, run), &tmp).unwrap();
                std::fs::rename(head(sb, other), head(sb, run)).unwrap();
                std::fs::rename(&tmp, head(sb, other)).unwrap();
            },
        ),
        (
            "the other run's log copied over it, heads left",
            |sb, run, other| {
                std::fs::copy(sb.log_path(other), sb.log_path(run)).unwrap();
            },
        ),
    ];
    for (what, attack) in attacks {
        let (sb, [(run, _), (other, _)]) = two_runs();
        assert_eq!(sb.read("once.txt"), "ran\nran\n");
        attack(&sb, &run, &other);
        let v = sb.lifeboat(&["verify", &run]);
        assert_eq!(v.code, 1, "{what}: verify: {}", v.stderr);
        assert!(v.stderr.contains("TAMPERED"), "{what}: {}", v.stderr);
        let r = sb.lifeboat(&["resume", &run, "--yes"]);
        assert_eq!(r.code, 1, "{what}: resume: {}", r.stderr);
        assert!(
            r.stderr.contains("refusing to continue it"),
            "{what}: {}",
            r.stderr
        );
        assert_eq!(
            sb.read("once.txt"),
            "ran\nran\n",
            "{what}: nothing ran again"
        );
        let runs = sb.lifeboat(&["runs"]).stdout;
        let line = runs.lines().find(|l| l.starts_with(&run)).unwrap();
        assert!(line.contains("TAMPERED"), "{what}: runs: {runs}");
        let show = sb.lifeboat(&["show", &run]).stdout;
        assert!(
            show.starts_with("log       TAMPERED"),
            "{what}: show: {show}"
        );
        let metrics = sb.lifeboat(&["metrics"]).stdout;
        assert!(
            metrics.contains("lifeboat_runs_unverified{runbook=\"anchored\"}"),
            "{what}: metrics: {metrics}"
        );
    }
}

/// A careful forger rewrites the whole chain and the head to match. Only a hash kept outside
/// the state folder tells: `verify --expect` with the hash the run printed when it stopped.
#[test]
fn a_log_and_head_rewritten_together_are_caught_by_the_hash_kept_elsewhere() {
    let (sb, [(run, hash), _]) = two_runs();
    let ok = sb.lifeboat(&["verify", &run, "--expect", &hash]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    // Rewrite: drop the last line (the run_finished) and re-anchor the head on the new end.
    let log = std::fs::read(sb.log_path(&run)).unwrap();
    let lines: Vec<&[u8]> = log
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let kept: Vec<u8> = lines[..lines.len() - 1]
        .iter()
        .flat_map(|l| [*l, b"\n"].concat())
        .collect();
    std::fs::write(sb.log_path(&run), &kept).unwrap();
    let v = lifeboat::runlog::verify(&run, &kept, None);
    lifeboat::runlog::write_head(
        &head(&sb, &run),
        &lifeboat::runlog::Head {
            seq: v.lines,
            hash: v.last_hash.clone(),
            open: false,
        },
    )
    .unwrap();
    assert_eq!(
        sb.lifeboat(&["verify", &run]).code,
        0,
        "consistent as rewritten"
    );
    let caught = sb.lifeboat(&["verify", &run, "--expect", &hash]);
    assert_eq!(caught.code, 1, "{}", caught.stderr);
    assert!(
        caught
            .stderr
            .contains("no line of this log has the expected hash"),
        "{}",
        caught.stderr
    );
    let earlier = sb.lifeboat(&["verify", &run, "--expect", &v.last_hash]);
    assert_eq!(earlier.code, 0);
}

/// A run that crashed left its head open: its last lines are unanchored, not tampered with, and
/// `resume` finishes it.
#[test]
fn a_crashed_runs_last_lines_are_unanchored_and_resume_finishes_it() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook("crash", "steps:\n  - {id: slow, action: shell, with: {script: '[ -f again ] && exit 0; touch again; echo $$ > pgid; sleep 30'}}\n"),
    );
    let child = sb
        .command(&["run", "r.yaml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sb.wait_for("pgid", "", 200);
    let id = {
        let runs: serde_json::Value =
            serde_json::from_str(&sb.lifeboat(&["runs", "--json"]).stdout).unwrap();
        runs[0]["id"].as_str().unwrap().to_string()
    };
    // kill -9 the driver (its group: the shell step too).
    #[allow(unsafe_code)]
    // SAFETY: signalling the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL)
    };
    sb.kill_group();
    let _ = child.wait_with_output();
    let v = sb.lifeboat(&["verify", &id]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(v.stderr.contains("not stopped cleanly"), "{}", v.stderr);
    let r = sb.lifeboat(&["resume", &id, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.lifeboat(&["verify", &id]).code, 0);
}

#[test]
fn state_files_are_their_owners_alone() {
    let (sb, [(run, _), _]) = two_runs();
    let mode = |p: PathBuf| std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(sb.path(".lifeboat")), 0o700);
    for sub in ["runs", "locks", "heads"] {
        assert_eq!(mode(sb.path(&format!(".lifeboat/{sub}"))), 0o700, "{sub}");
    }
    assert_eq!(mode(run_dir(&sb, &run)), 0o700);
    for f in ["log.jsonl", "runbook.yaml", "driver"] {
        assert_eq!(mode(run_dir(&sb, &run).join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(head(&sb, &run)), 0o600);
    // A folder made readable by others is made private again when lifeboat opens it.
    std::fs::set_permissions(sb.path(".lifeboat"), std::fs::Permissions::from_mode(0o755)).unwrap();
    sb.lifeboat(&["runs"]);
    assert_eq!(mode(sb.path(".lifeboat")), 0o700);
}
