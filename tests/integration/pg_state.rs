//! The PostgreSQL state store (`--state postgres://...`) against a real cluster: the same history,
//! verification and locks as the folder store, shared by processes that share nothing else.

use crate::common;

use common::pg::{Cluster, PASSWORD};
use common::sandbox::{Sandbox, runbook};

fn state_url(pg: &Cluster) -> String {
    pg.psql("postgres", "create database lifeboat_state");
    format!("postgres://postgres@127.0.0.1:{}/lifeboat_state", pg.port)
}

#[test]
fn runs_gates_resume_and_verify_work_on_the_postgres_store() {
    let pg = Cluster::start();
    let url = state_url(&pg);
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "shared",
            r#"
steps:
  - {id: before, action: shell, with: {script: "echo before >> side.txt"}}
  - {id: gate, action: approval, needs: [before], with: {message: "go?"}}
  - {id: after, action: shell, needs: [gate], with: {script: "echo after >> side.txt"}}
"#,
        ),
    );
    let env = [("PGPASSWORD", PASSWORD)];
    let r = sb.lifeboat_env(&["run", "r.yaml", "--state", &url], &env);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let id = r.run_id();
    assert!(
        !sb.path(".lifeboat").exists(),
        "nothing went to the folder store"
    );
    let runs = sb.lifeboat_env(&["runs", "--json", "--state", &url], &env);
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(runs[0]["status"], "waiting_for_approval");
    assert_eq!(
        sb.lifeboat_env(&["approve", &id, "gate", "--state", &url], &env)
            .code,
        0
    );
    let r = sb.lifeboat_env(&["resume", &id, "--state", &url], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.read("side.txt"), "before\nafter\n");
    let v = sb.lifeboat_env(&["verify", &id, "--state", &url], &env);
    assert_eq!(v.code, 0, "{}", v.stderr);
    let log = sb
        .lifeboat_env(&["log", &id, "--json", "--state", &url], &env)
        .stdout;
    assert_eq!(
        log.lines().count(),
        pg.psql(
            "lifeboat_state",
            &format!("select count(*) from lifeboat_log where run = '{id}'")
        )
        .parse::<usize>()
        .unwrap()
    );
    assert!(log.contains("\"event\":\"approval_granted\""));

    // Tampering with a row is caught like tampering with a file line.
    pg.psql("lifeboat_state", &format!("update lifeboat_log set line = replace(line, '\"step\":\"after\"', '\"step\":\"AFTER\"') where run = '{id}' and seq = (select max(seq) from lifeboat_log where run = '{id}' and line like '%step_succeeded%')"));
    let v = sb.lifeboat_env(&["verify", &id, "--state", &url], &env);
    assert_eq!(v.code, 1, "{}", v.stderr);
    assert!(v.stderr.contains("TAMPERED"), "{}", v.stderr);
    assert_eq!(
        pg.psql("lifeboat_state", "select version from lifeboat_schema"),
        "2"
    );
}

/// On the PostgreSQL store an approver is a database role: the role the approving session
/// logged in as (`session_user`), which no flag or variable sets.
#[test]
fn on_the_postgres_store_an_approver_is_the_sessions_role() {
    let pg = Cluster::start();
    let url = state_url(&pg);
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "roles",
            "steps:\n  - {id: gate, action: approval, with: {message: go, approvers: [lb_ann]}}\n  - {id: after, action: shell, needs: [gate], with: {script: 'echo after >> side.txt'}}\n",
        ),
    );
    let env = [("PGPASSWORD", PASSWORD)];
    let r = sb.lifeboat_env(&["run", "r.yaml", "--state", &url, "--yes"], &env);
    assert_eq!(r.code, 3, "--yes does not pass it: {}", r.stderr);
    let id = r.run_id();
    // The owner's role is not an approver, whatever it claims.
    let bad = sb.lifeboat_env(
        &["approve", &id, "gate", "--state", &url],
        &[
            ("PGPASSWORD", PASSWORD),
            ("LIFEBOAT_OPERATOR", "lb_ann"),
            ("USER", "lb_ann"),
        ],
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr
            .contains("you are `postgres` (the state store's database role)"),
        "{}",
        bad.stderr
    );
    pg.psql(
        "lifeboat_state",
        "create role lb_ann login password 'ann-Pw-4321'; grant select, insert, update on all tables in schema public to lb_ann",
    );
    let ann_url = format!("postgres://lb_ann@127.0.0.1:{}/lifeboat_state", pg.port);
    let ok = sb.lifeboat_env(
        &["approve", &id, "gate", "--state", &ann_url],
        &[("PGPASSWORD", "ann-Pw-4321")],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    let r = sb.lifeboat_env(&["resume", &id, "--state", &url], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let log = sb
        .lifeboat_env(&["log", &id, "--json", "--state", &url], &env)
        .stdout;
    let granted: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"approval_granted\""))
        .collect();
    assert_eq!(granted.len(), 1);
    assert!(granted[0].contains("\"by\":\"lb_ann\""), "{}", granted[0]);
}

/// Issue 4: 20 concurrent `lifeboat run`s needing the same lock: exactly one runs at a time,
/// none is lost (each is refused with exit 4 while another holds the lock, and tries again).
#[test]
fn twenty_concurrent_runs_needing_one_lock_run_one_at_a_time_and_none_is_lost() {
    let pg = Cluster::start();
    let url = state_url(&pg);
    let sb = Sandbox::new();
    let side = sb.path("side.txt").display().to_string();
    sb.write("r.yaml", &runbook("one-at-a-time", &format!(r#"
locks: [orders-db]
steps:
  - id: exclusive
    action: shell
    with: {{script: "echo start $LIFEBOAT_RUN_ID >> {side}; sleep 0.1; echo end $LIFEBOAT_RUN_ID >> {side}"}}
"#)));
    let sb = std::sync::Arc::new(sb);
    let threads: Vec<_> = (0..20)
        .map(|_| {
            let sb = sb.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                let mut refused = 0;
                loop {
                    let r = sb.lifeboat_env(
                        &["run", "r.yaml", "--state", &url],
                        &[("PGPASSWORD", PASSWORD)],
                    );
                    match r.code {
                        0 => return (r.run_id(), refused),
                        4 => {
                            assert!(
                                r.stderr.contains("lock `orders-db` is held by run"),
                                "{}",
                                r.stderr
                            );
                            refused += 1;
                            std::thread::sleep(std::time::Duration::from_millis(20));
                        }
                        other => panic!("exit {other}: {}", r.stderr),
                    }
                }
            })
        })
        .collect();
    let results: Vec<(String, u32)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let refusals: u32 = results.iter().map(|r| r.1).sum();
    assert!(refusals > 0, "the runs never met: the test proves nothing");
    let lines: Vec<String> = sb.read("side.txt").lines().map(String::from).collect();
    assert_eq!(lines.len(), 40, "{lines:?}");
    for pair in lines.chunks(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert!(
            a.starts_with("start ") && b.starts_with("end ") && a[6..] == b[4..],
            "overlapping runs: {a} / {b}"
        );
    }
    let runs = sb.lifeboat_env(
        &["runs", "--json", "--state", &url],
        &[("PGPASSWORD", PASSWORD)],
    );
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    let ok = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .count();
    assert_eq!(ok, 20, "every run is in the shared history");
    for (id, _) in &results {
        assert_eq!(
            sb.lifeboat_env(
                &["verify", id, "--state", &url],
                &[("PGPASSWORD", PASSWORD)]
            )
            .code,
            0
        );
    }
}

#[test]
fn a_crashed_holders_lock_is_taken_over_once_its_session_is_gone() {
    let pg = Cluster::start();
    let url = state_url(&pg);
    let sb = Sandbox::new();
    sb.write("slow.yaml", &runbook("slow", "locks: [orders-db]\nsteps:\n  - {id: a, action: shell, with: {script: 'echo $$ > pgid; echo started > started; sleep 30'}}\n"));
    sb.write(
        "other.yaml",
        &runbook(
            "other",
            "locks: [orders-db]\nsteps:\n  - {id: b, action: shell, with: {script: 'true'}}\n",
        ),
    );
    let mut holder = sb
        .command(&["run", "slow.yaml", "--state", &url])
        .env("PGPASSWORD", PASSWORD)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    sb.wait_for("started", "", 200);
    let r = sb.lifeboat_env(
        &["run", "other.yaml", "--state", &url],
        &[("PGPASSWORD", PASSWORD)],
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("pid {}", holder.id())),
        "{}",
        r.stderr
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    sb.kill_group();
    // The server notices the dead session (its socket closed) and drops its advisory locks.
    let mut r = sb.lifeboat_env(
        &["run", "other.yaml", "--state", &url],
        &[("PGPASSWORD", PASSWORD)],
    );
    for _ in 0..50 {
        if r.code != 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        r = sb.lifeboat_env(
            &["run", "other.yaml", "--state", &url],
            &[("PGPASSWORD", PASSWORD)],
        );
    }
    assert_eq!(r.code, 0, "{}", r.stderr);
    let log = sb
        .lifeboat_env(
            &["log", &r.run_id(), "--json", "--state", &url],
            &[("PGPASSWORD", PASSWORD)],
        )
        .stdout;
    assert!(log.contains("\"event\":\"lock_taken_over\""), "{log}");
}

/// The advisory locks live as long as the session that took them. When it is gone (here the
/// server ends it, as a restart or a cut network would), another run may take the locks, so
/// the holder stops as if interrupted: nothing new starts, and `resume` continues later.
#[test]
fn a_run_whose_lock_session_is_lost_is_interrupted() {
    let pg = Cluster::start();
    let url = state_url(&pg);
    let sb = Sandbox::new();
    sb.write(
        "slow.yaml",
        &runbook(
            "slow",
            "locks: [orders-db]\nsteps:\n  - {id: a, action: shell, with: {script: 'echo started > started; sleep 2', idempotent: true}}\n  - {id: b, action: shell, needs: [a], with: {script: 'echo b >> side.txt'}}\n",
        ),
    );
    let holder = sb
        .command(&["run", "slow.yaml", "--state", &url, "--grace", "5s"])
        .env("PGPASSWORD", PASSWORD)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sb.wait_for("started", "", 200);
    pg.psql(
        "lifeboat_state",
        "select pg_terminate_backend(pid) from pg_locks where locktype = 'advisory'",
    );
    let out: common::sandbox::Ran = holder.wait_with_output().unwrap().into();
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert_eq!(sb.read("side.txt"), "", "nothing new started");
    let env = [("PGPASSWORD", PASSWORD)];
    let log = sb
        .lifeboat_env(&["log", &out.run_id(), "--json", "--state", &url], &env)
        .stdout;
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "interrupted", "{last}");
    assert!(
        last["summary"]
            .as_str()
            .unwrap()
            .contains("the loss of locks `orders-db`"),
        "{last}"
    );
    let r = sb.lifeboat_env(&["resume", &out.run_id(), "--state", &url], &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.read("side.txt"), "b\n");
}
