//! What stops a run from outside: signals (a dropped SSH session among them) and locks tampered
//! with while held.

use crate::common::sandbox::{Kill, Ran, Sandbox, runbook};
use std::process::{Child, Stdio};

/// A runbook whose first step waits with its shell's pid in `pgid`, ignoring SIGTERM (as a
/// careless script may), unless `quick` exists; the second must never start once the run is
/// interrupted.
const STUBBORN: &str = r#"
steps:
  - id: long
    action: shell
    with: {script: "[ -f quick ] || { trap '' TERM; echo $$ > pgid; echo started > started; sleep 60; }", idempotent: true}
  - id: next
    action: shell
    needs: [long]
    with: {script: "echo next >> side.txt"}
"#;

#[allow(unsafe_code)]
fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to a process this test started.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Whether the process group the step wrote to `pgid` still has a process in it.
#[allow(unsafe_code)]
fn group_alive(sb: &Sandbox) -> bool {
    let pgid: i32 = sb.read("pgid").trim().parse().unwrap();
    // SAFETY: signal 0 only checks that the group exists.
    unsafe { libc::killpg(pgid, 0) == 0 }
}

/// Whether the step's group is gone (or goes within the 3 s between TERM and KILL, and a moment
/// for init to reap it).
fn group_gone(sb: &Sandbox) -> bool {
    (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        !group_alive(sb)
    })
}

#[test]
fn every_stop_signal_records_the_run_and_ends_the_step_even_one_that_ignores_term() {
    for (name, sig) in [
        ("SIGHUP", libc::SIGHUP),
        ("SIGTERM", libc::SIGTERM),
        ("SIGINT", libc::SIGINT),
    ] {
        let sb = Sandbox::new();
        sb.write("r.yaml", &runbook("stubborn", STUBBORN));
        let child = sb
            .command(&["run", "r.yaml", "--grace", "1s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        sb.wait_for("started", "started", 200);
        assert!(group_alive(&sb), "{name}: the step is running");
        signal(&child, sig);
        let out: Ran = child.wait_with_output().unwrap().into();
        assert_eq!(out.code, 130, "{name}: {}", out.stderr);
        // TERM was ignored: the engine sent KILL before it exited (what is left, briefly, are
        // zombies for init to reap).
        assert!(
            group_gone(&sb),
            "{name}: the step's processes outlived the engine"
        );
        let id = out.run_id();
        let events = sb.events(&id);
        let last = events.last().unwrap();
        assert_eq!(last["status"], "interrupted", "{name}");
        assert!(
            last["summary"].as_str().unwrap().contains(name),
            "{name}: {last}"
        );
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "step_interrupted" && e["step"] == "long"),
            "{name}"
        );
        assert_eq!(sb.read("side.txt"), "", "{name}: nothing new started");
        assert_eq!(sb.lifeboat(&["verify", &id]).code, 0, "{name}");
    }
}

/// The real thing: the run's terminal goes away (util-linux `script` holds the pseudo-terminal
/// and is killed, as sshd is when a connection drops), so the kernel hangs it up.
#[test]
#[allow(unsafe_code)]
fn a_dropped_terminal_interrupts_the_run_and_resume_finishes_it() {
    let sb = Sandbox::new();
    sb.write("r.yaml", &runbook("hangup", STUBBORN));
    let cmd = format!("{} run r.yaml --grace 1s", env!("CARGO_BIN_EXE_lifeboat"));
    let mut terminal = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(sb.dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("util-linux `script` (Debian's bsdutils) is installed");
    sb.wait_for("started", "started", 200);
    terminal.kill().unwrap();
    terminal.wait().unwrap();
    // The engine records the interruption and ends the step's group within grace + KILL delay.
    let mut id = None;
    for _ in 0..200 {
        let runs = sb.lifeboat(&["runs", "--json"]).stdout;
        let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
        if runs[0]["status"] == "interrupted" {
            id = runs[0]["id"].as_str().map(str::to_string);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let id = id.expect("the run ended interrupted");
    assert!(group_gone(&sb), "the step's processes were orphaned");
    let last = sb.events(&id).pop().unwrap();
    assert!(
        last["summary"].as_str().unwrap().contains("SIGHUP"),
        "{last}"
    );
    // `long` is idempotent, so resume runs it again without asking; quick this time.
    sb.write("quick", "");
    let r = sb.lifeboat(&["resume", &id]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.read("side.txt"), "next\n");
}

const LOCKED: &str = "locks: [orders-db]\nsteps:\n  - {id: a, action: shell, with: {script: 'echo started > started; while [ ! -f go ]; do sleep 0.05; done; echo done >> side.txt'}}\n";

fn lock_file(sb: &Sandbox) -> std::path::PathBuf {
    sb.path(".lifeboat/locks/orders-db.lock")
}

#[test]
fn a_held_lock_keeps_a_second_run_out_however_its_file_is_removed() {
    type Remove = fn(&Sandbox);
    let ways: [(&str, Remove); 5] = [
        ("rm the file", |sb| {
            std::fs::remove_file(lock_file(sb)).unwrap()
        }),
        ("rm -rf locks/", |sb| {
            std::fs::remove_dir_all(sb.path(".lifeboat/locks")).unwrap()
        }),
        ("mv the file away", |sb| {
            std::fs::rename(lock_file(sb), sb.path("stolen.lock")).unwrap()
        }),
        ("replace it with an empty file", |sb| {
            let new = sb.path(".lifeboat/locks/new");
            std::fs::write(&new, "").unwrap();
            std::fs::rename(&new, lock_file(sb)).unwrap();
        }),
        ("replace it with one saying it is free", |sb| {
            let new = sb.path(".lifeboat/locks/new");
            std::fs::write(
                &new,
                r#"{"run":"x","pid":1,"host":"h","since":"s","state":"free"}"#,
            )
            .unwrap();
            std::fs::rename(&new, lock_file(sb)).unwrap();
        }),
    ];
    for (how, remove) in ways {
        let sb = Sandbox::new();
        sb.write("first.yaml", &runbook("first", LOCKED));
        sb.write("second.yaml", &runbook("second", LOCKED));
        let first = sb
            .command(&["run", "first.yaml"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        sb.wait_for("started", "started", 200);
        remove(&sb);
        let second = sb.lifeboat(&["run", "second.yaml"]);
        assert_eq!(second.code, 4, "{how}: {}", second.stderr);
        assert!(
            second.stderr.contains("lock `orders-db` is held by run"),
            "{how}: {}",
            second.stderr
        );
        assert!(
            second.stderr.contains(&format!("pid {}", first.id())),
            "{how}: {}",
            second.stderr
        );
        // The holder puts its file back.
        for _ in 0..100 {
            if std::fs::read_to_string(lock_file(&sb)).is_ok_and(|t| t.contains("\"held\"")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let again = sb.lifeboat(&["run", "second.yaml"]);
        assert_eq!(again.code, 4, "{how}: {}", again.stderr);
        sb.write("go", "");
        let first: Ran = first.wait_with_output().unwrap().into();
        assert_eq!(first.code, 0, "{how}: {}", first.stderr);
        assert_eq!(sb.read("side.txt"), "done\n", "{how}: one run did the work");
        let free = sb.lifeboat(&["run", "second.yaml"]);
        assert_eq!(
            free.code, 0,
            "{how}: free once the holder ended: {}",
            free.stderr
        );
    }
}

#[test]
fn a_run_waiting_for_approval_keeps_its_lock_when_the_lock_file_is_deleted() {
    let sb = Sandbox::new();
    let gate = "locks: [orders-db]\nsteps:\n  - {id: ok, action: approval, with: {message: go?}}\n";
    sb.write("gate.yaml", &runbook("gate", gate));
    sb.write("other.yaml", &runbook("other", LOCKED));
    let waiting = sb.lifeboat(&["run", "gate.yaml"]);
    assert_eq!(waiting.code, 3, "{}", waiting.stderr);
    let id = waiting.run_id();
    for how in ["file", "folder"] {
        match how {
            "file" => std::fs::remove_file(lock_file(&sb)).unwrap(),
            _ => std::fs::remove_dir_all(sb.path(".lifeboat/locks")).unwrap(),
        }
        let other = sb.lifeboat(&["run", "other.yaml"]);
        assert_eq!(other.code, 4, "{how}: {}", other.stderr);
        assert!(
            other.stderr.contains(&format!("kept by run {id}")),
            "{how}: {}",
            other.stderr
        );
    }
    assert_eq!(sb.lifeboat(&["approve", &id, "ok"]).code, 0);
    assert_eq!(sb.lifeboat(&["resume", &id]).code, 0);
    sb.write("go", "");
    let other = sb.lifeboat(&["run", "other.yaml"]);
    assert_eq!(other.code, 0, "{}", other.stderr);
}

/// lifeboat itself killed with -9 cannot end its step's process group, which runs on as an
/// orphan; `resume` ends it before it decides anything about the step.
#[test]
fn resume_ends_the_processes_a_killed_lifeboat_left_running() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "orphans",
            r#"
steps:
  - id: long
    action: shell
    with: {script: "[ -f quick ] || { echo $$ > pgid; sleep 300 & echo started > started; wait; }", idempotent: true}
"#,
        ),
    );
    let id = sb
        .killed(&["run", "r.yaml"], Kill::Once("started"))
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        group_alive(&sb),
        "the step's shell and its sleep outlive a killed lifeboat"
    );
    sb.write("quick", "");
    let r = sb.lifeboat(&["resume", &id]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(group_gone(&sb), "resume left the orphaned group running");
    let events = sb.events(&id);
    let interrupted = events
        .iter()
        .find(|e| e["event"] == "step_interrupted")
        .unwrap();
    let reason = interrupted["reason"].as_str().unwrap();
    assert!(
        reason.contains("2 of its processes were still running and were ended"),
        "{reason}"
    );
}

/// `lifeboat abort`: a run waiting at a gate is ended for good, rolled back when asked, its
/// lock released, and who and why recorded; it cannot be resumed afterwards.
#[test]
fn abort_ends_a_waiting_run_rolls_it_back_and_releases_its_lock() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "abortable",
            r#"
locks: [orders-db]
steps:
  - id: stop_writers
    action: shell
    with: {script: "echo stopped >> side.txt"}
    compensate: {action: shell, with: {script: "echo restarted >> side.txt"}}
  - id: gate
    action: approval
    needs: [stop_writers]
    with: {message: "restore?"}
  - id: restore
    action: shell
    needs: [gate]
    with: {script: "echo restored >> side.txt"}
"#,
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml", "--non-interactive"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let id = r.run_id();
    let second = sb.lifeboat(&["run", "r.yaml", "--non-interactive"]);
    assert_eq!(
        second.code, 4,
        "the waiting run holds its lock: {}",
        second.stderr
    );

    let bad = sb.lifeboat(&["abort", &id, "--reason", "two\nlines"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    let a = sb.lifeboat(&[
        "abort",
        &id,
        "--rollback",
        "--reason",
        "the primary came back",
    ]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert_eq!(sb.read("side.txt"), "stopped\nrestarted\n");
    let events = sb.events(&id);
    let aborted = events.iter().find(|e| e["event"] == "run_aborted").unwrap();
    assert_eq!(aborted["reason"], "the primary came back");
    assert_eq!(aborted["rollback"], true);
    assert!(!aborted["by"].as_str().unwrap().is_empty(), "{aborted}");
    let last = events.last().unwrap();
    assert_eq!(last["status"], "aborted");
    assert!(
        last["summary"]
            .as_str()
            .unwrap()
            .ends_with(": the primary came back; rolled back (1 compensated)"),
        "{last}"
    );
    assert_eq!(sb.lifeboat(&["verify", &id]).code, 0);

    let again = sb.lifeboat(&["resume", &id]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("was aborted"), "{}", again.stderr);
    let twice = sb.lifeboat(&["abort", &id]);
    assert_eq!(twice.code, 2, "{}", twice.stderr);
    // The lock went with the run.
    sb.write(
        "r2.yaml",
        &runbook(
            "next",
            "locks: [orders-db]\nsteps:\n  - {id: a, action: shell, with: {script: 'true'}}\n",
        ),
    );
    assert_eq!(sb.lifeboat(&["run", "r2.yaml"]).code, 0);
}

/// A running run is not cut: `abort` asks its process to stop as Ctrl-C does, waits for it,
/// then ends it.
#[test]
fn abort_asks_a_running_run_to_stop_before_ending_it() {
    let sb = Sandbox::new();
    sb.write("r.yaml", &runbook("running", STUBBORN));
    let child = sb
        .command(&["run", "r.yaml", "--grace", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sb.wait_for("started", "started", 200);
    let runs: serde_json::Value =
        serde_json::from_str(&sb.lifeboat(&["runs", "--json"]).stdout).unwrap();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    let a = sb.lifeboat(&["abort", &id, "--reason", "wrong region"]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    let out: Ran = child.wait_with_output().unwrap().into();
    assert_eq!(
        out.code, 130,
        "the driver stopped as on Ctrl-C: {}",
        out.stderr
    );
    assert!(group_gone(&sb), "the step's processes outlived the abort");
    let events = sb.events(&id);
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "run_finished")
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["interrupted", "aborted"]);
    assert_eq!(sb.read("side.txt"), "", "nothing new started");
}
