//! `lifeboat run`, `resume`, `approve` and the run log, end to end through the real binary.

use crate::common;

use common::sandbox::{Kill, Sandbox, random_moment, runbook};

#[test]
fn a_run_succeeds_and_prints_its_id_first() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "ok",
            r#"
steps:
  - id: first
    action: shell
    with: {argv: [sh, -c, "echo one >> side.txt"]}
  - id: second
    action: shell
    needs: [first]
    with: {script: "echo two >> side.txt; echo {{ steps.first.outputs.exit_code }}"}
    assert: "outputs.stdout | trim == '0'"
"#,
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id = r.run_id();
    assert_eq!(r.stdout.trim(), id);
    assert_eq!(sb.read("side.txt"), "one\ntwo\n");
    assert_eq!(
        sb.trace(&id),
        [
            "run_started",
            "step_started:first",
            "step_succeeded:first",
            "step_started:second",
            "step_succeeded:second",
            "run_finished"
        ]
    );
    let started = &sb.events(&id)[0];
    assert_eq!(started["runbook"], "ok");
    assert_eq!(started["operator"], "tester");
    assert_eq!(started["file_sha256"].as_str().unwrap().len(), 64);
    assert!(r.stderr.contains("✓ second"), "{}", r.stderr);
    let v = sb.lifeboat(&["verify", &id]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(v.stderr.contains("intact, 6 lines"), "{}", v.stderr);

    let runs = sb.lifeboat(&["runs", "--json"]);
    let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
    assert_eq!(runs[0]["id"], id.as_str());
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["version"], "1.0.0");
    assert!(runs[0]["finished_at"].is_string());
    let show = sb.lifeboat(&["show", &id, "--json"]);
    let show: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(show["steps"]["second"]["outputs"]["stdout"], "0\n");
}

#[test]
fn transient_failures_are_retried_with_backoff_and_permanent_ones_are_not() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "retry",
            r#"
steps:
  - id: flaky
    action: shell
    # Fails twice, then succeeds: the attempt count lives in a file.
    with: {script: "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; [ $n -ge 3 ]"}
    retry: {attempts: 4, delay: 10ms, factor: 2.0, max_delay: 50ms}
  - id: missing
    action: shell
    needs: [flaky]
    with: {argv: [definitely-not-a-program-lifeboat]}
    retry: {attempts: 5, delay: 10ms}
"#,
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let id = r.run_id();
    let trace = sb.trace(&id);
    assert_eq!(
        trace
            .iter()
            .filter(|t| *t == "step_attempt_failed:flaky")
            .count(),
        2,
        "{trace:?}"
    );
    assert!(trace.contains(&"step_succeeded:flaky".to_string()));
    // Not found is not worth retrying: one attempt, then failed.
    assert_eq!(
        trace
            .iter()
            .filter(|t| *t == "step_started:missing")
            .count(),
        1,
        "{trace:?}"
    );
    let events = sb.events(&id);
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "step_attempt_failed")
        .collect();
    assert_eq!(failed[0]["attempt"], 1);
    assert!(failed[0]["retry_in_ms"].as_u64().unwrap() >= 10);
    let last = events.last().unwrap();
    assert_eq!(last["status"], "failed");
    assert!(
        last["summary"].as_str().unwrap().contains("missing"),
        "{last}"
    );
}

/// `retry.on_exit_codes` says which exit statuses of a `shell` step are worth another attempt
/// (75, EX_TEMPFAIL, here): those are retried, and any other fails the step at once, saying why.
#[test]
fn only_the_exit_codes_a_shell_step_names_are_retried() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "codes",
            r#"
steps:
  - id: busy
    action: shell
    # Exits 75 twice (the lock is held), then succeeds.
    with: {script: "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; [ $n -ge 3 ] || exit 75"}
    retry: {attempts: 5, delay: 10ms, on_exit_codes: [75]}
  - id: broken
    action: shell
    needs: [busy]
    with: {script: "exit 2"}
    retry: {attempts: 5, delay: 10ms, on_exit_codes: [75, 111]}
"#,
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let id = r.run_id();
    let trace = sb.trace(&id);
    let count = |t: &str| trace.iter().filter(|x| *x == t).count();
    assert_eq!(count("step_attempt_failed:busy"), 2, "{trace:?}");
    assert_eq!(count("step_succeeded:busy"), 1, "{trace:?}");
    assert_eq!(count("step_started:broken"), 1, "{trace:?}");
    let f = sb.failure(&id);
    assert!(
        f.contains("exited with status 2")
            && f.contains("not retried: exit status 2 is not in `retry.on_exit_codes`"),
        "{f}"
    );
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "slow",
            r#"
steps:
  - id: slow
    action: shell
    # The background sleep is a grandchild: only a process-group kill reaches it.
    with: {script: "sleep 30 & echo $! > child.pid; wait"}
    timeout: 1s
"#,
        ),
    );
    let t0 = std::time::Instant::now();
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(t0.elapsed() < std::time::Duration::from_secs(20));
    let events = sb.events(&r.run_id());
    let failed = events.iter().find(|e| e["event"] == "step_failed").unwrap();
    let failure = failed["error"].as_str().unwrap_or_default();
    assert!(failure.contains("timed out after 1s"), "{failed}");
    let pid: i32 = sb.read("child.pid").trim().parse().unwrap();
    let mut gone = false;
    for _ in 0..50 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z")
        {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(gone, "the grandchild {pid} outlived its step's timeout");
}

#[test]
fn a_failure_rolls_back_completed_steps_in_reverse_order() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "rollback",
            r#"
steps:
  - id: stop_writers
    action: shell
    with: {script: "echo stop >> side.txt"}
    compensate: {action: shell, with: {script: "echo undo-stop >> side.txt"}}
  - id: read_only
    action: shell
    needs: [stop_writers]
    with: {script: "echo look", changes: false}
  - id: restore
    action: shell
    needs: [read_only]
    with: {script: "echo restore >> side.txt"}
    compensate: {action: shell, with: {script: "echo undo-restore >> side.txt"}}
  - id: verify
    action: shell
    needs: [restore]
    with: {script: "echo counts wrong >&2; exit 3"}
  - id: never
    action: shell
    needs: [verify]
    with: {script: "echo never >> side.txt"}
"#,
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        sb.read("side.txt"),
        "stop\nrestore\nundo-restore\nundo-stop\n"
    );
    let id = r.run_id();
    let trace = sb.trace(&id);
    let tail: Vec<&str> = trace
        .iter()
        .skip_while(|t| *t != "step_failed:verify")
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "step_failed:verify",
            "rollback_started",
            "compensation_started:restore",
            "compensation_succeeded:restore",
            "compensation_started:stop_writers",
            "compensation_succeeded:stop_writers",
            "rollback_finished",
            "run_finished"
        ]
    );
    let events = sb.events(&id);
    let failed = events.iter().find(|e| e["event"] == "step_failed").unwrap();
    let failure = failed["error"].as_str().unwrap_or_default();
    assert!(failure.contains("counts wrong"), "{failed}");
    let summary = events.last().unwrap()["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(summary.contains("rolled back (2 compensated)"), "{summary}");
}

#[test]
fn when_skips_and_dependents_follow_unless_they_opt_in() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "when",
            r#"
params:
  region: {type: string, default: us-east-1}
steps:
  - id: failover
    action: shell
    when: "params.region == 'eu-west-1'"
    with: {script: "echo failover >> side.txt"}
  - id: verify_dns
    action: shell
    needs: [failover]
    with: {script: "echo verify >> side.txt"}
  - id: notify
    action: shell
    needs: [verify_dns]
    on_skipped_needs: run
    with: {script: "echo notify >> side.txt"}
  - id: best_effort
    action: shell
    with: {script: "exit 2"}
    on_failure: continue
  - id: after_best_effort
    action: shell
    needs: [best_effort]
    with: {script: "echo after >> side.txt"}
"#,
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut side: Vec<String> = sb.read("side.txt").lines().map(String::from).collect();
    side.sort();
    assert_eq!(side, ["after", "notify"]);
    let events = sb.events(&r.run_id());
    let skipped: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "step_skipped")
        .collect();
    assert_eq!(skipped.len(), 2);
    assert_eq!(skipped[1]["need"], "failover");
    assert!(
        events.last().unwrap()["summary"]
            .as_str()
            .unwrap()
            .contains("1 failed and the run went on")
    );
    let r = sb.lifeboat(&["run", "r.yaml", "-p", "region=eu-west-1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let side = sb.read("side.txt");
    let at = |w: &str| side.lines().position(|l| l == w);
    assert!(at("failover").unwrap() < at("verify").unwrap(), "{side}");
}

fn gate_runbook(approvers: &str) -> String {
    runbook(
        "gate",
        &format!(
            r#"
steps:
  - id: restore
    action: shell
    with: {{script: "echo restore >> side.txt"}}
  - id: go_ahead
    action: approval
    needs: [restore]
    with: {{message: "Counts verified. Restart the writers?", approvers: {approvers}}}
  - id: restart
    action: shell
    needs: [go_ahead]
    with: {{script: "echo restart >> side.txt"}}
"#
        ),
    )
}

#[test]
fn an_approval_gate_stops_with_exit_3_and_resume_continues_after_approve() {
    let me = common::os_account();
    let sb = Sandbox::new();
    sb.write("r.yaml", &gate_runbook(&format!("[{me}]")));
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let id = r.run_id();
    assert!(
        r.stderr
            .contains(&format!("lifeboat approve {id} go_ahead")),
        "{}",
        r.stderr
    );
    assert_eq!(sb.read("side.txt"), "restore\n");
    let ok = sb.lifeboat(&["approve", &id, "go_ahead"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stderr.contains(&format!("as {me}")), "{}", ok.stderr);
    // Once: a second approval is refused, and the first stands.
    let twice = sb.lifeboat(&["approve", &id, "go_ahead"]);
    assert_eq!(twice.code, 2, "{}", twice.stderr);
    assert!(
        twice.stderr.contains("already approved"),
        "{}",
        twice.stderr
    );
    let again = sb.lifeboat(&["resume", &id]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        sb.read("side.txt"),
        "restore\nrestart\n",
        "restore must not run twice"
    );
    let events = sb.events(&id);
    let granted: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "approval_granted")
        .collect();
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0]["by"], me.as_str());
    assert_eq!(granted[0]["via"], "command");
    assert_eq!(sb.lifeboat(&["verify", &id]).code, 0);
    let done = sb.lifeboat(&["resume", &id]);
    assert_eq!(done.code, 0);
    assert!(done.stderr.contains("already succeeded"));
}

/// `approvers` is a control: no flag, variable or `--yes` makes someone an approver.
#[test]
fn only_an_approver_passes_a_gate_that_names_approvers() {
    let me = common::os_account();
    let sb = Sandbox::new();
    sb.write("r.yaml", &gate_runbook("[ana]"));
    // --yes answers other gates; not this one.
    let r = sb.lifeboat(&["run", "r.yaml", "--yes"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let id = r.run_id();
    for (claim, env) in [
        ("nothing", vec![]),
        ("$LIFEBOAT_OPERATOR", vec![("LIFEBOAT_OPERATOR", "ana")]),
        ("$USER", vec![("USER", "ana")]),
    ] {
        let bad = sb.lifeboat_env(&["approve", &id, "go_ahead"], &env);
        assert_eq!(bad.code, 2, "claiming {claim}: {}", bad.stderr);
        assert!(
            bad.stderr.contains(&format!(
                "may be approved only by ana; you are `{me}` (this OS account)"
            )),
            "claiming {claim}: {}",
            bad.stderr
        );
    }
    let flag = sb.lifeboat(&["approve", &id, "go_ahead", "--operator", "ana"]);
    assert_eq!(flag.code, 2, "approve takes no name: {}", flag.stderr);
    let resumed = sb.lifeboat(&["resume", &id, "--yes"]);
    assert_eq!(resumed.code, 3, "{}", resumed.stderr);
    assert_eq!(sb.read("side.txt"), "restore\n");
    assert!(
        !sb.events(&id)
            .iter()
            .any(|e| e["event"] == "approval_granted")
    );
}

/// Names go into logs and reports: one that could forge a line is refused, from any source.
#[test]
fn an_operator_name_with_a_control_character_is_refused() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "ok",
            "steps:\n  - {id: a, action: shell, with: {argv: [\"true\"]}}\n",
        ),
    );
    for name in [
        "ana\nrun 1 succeeded",
        "ana\r",
        "bo\u{1b}[2J",
        "ev\u{202e}il",
        "tab\there",
    ] {
        let flag = sb.lifeboat(&["run", "r.yaml", "--operator", name]);
        assert_eq!(flag.code, 2, "{name:?}: {}", flag.stderr);
        assert!(
            flag.stderr.contains("holds a control character"),
            "{}",
            flag.stderr
        );
        assert!(!flag.stderr.contains(name), "the name is shown escaped");
        let env = sb.lifeboat_env(&["run", "r.yaml"], &[("LIFEBOAT_OPERATOR", name)]);
        assert_eq!(env.code, 2, "{name:?}: {}", env.stderr);
    }
    assert!(
        !sb.path(".lifeboat/runs").exists()
            || sb.lifeboat(&["runs", "--json"]).stdout.trim() == "[]"
    );
}

#[test]
fn yes_answers_gates_and_is_recorded_as_such() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "gate",
            r#"
steps:
  - id: go
    action: approval
    with: {message: "Go?"}
  - id: after
    action: shell
    needs: [go]
    with: {script: "true"}
"#,
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let events = sb.events(&r.run_id());
    assert_eq!(events[0]["yes"], true);
    let granted = events
        .iter()
        .find(|e| e["event"] == "approval_granted")
        .unwrap();
    assert_eq!(granted["via"], "yes_flag");
    assert!(
        r.stderr.contains("by --yes, without asking"),
        "{}",
        r.stderr
    );
}

#[test]
fn json_streams_events_on_stdout() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "json",
            "steps:\n  - {id: a, action: wait, with: {for: 10ms}}\n",
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "run_started",
            "step_started",
            "step_succeeded",
            "run_finished"
        ]
    );
    assert_eq!(lines[0]["seq"], 1);
    assert_eq!(lines[2]["outputs"]["polls"], 0);
}

#[test]
fn a_held_lock_exits_4_and_names_the_holder_and_a_crashed_holder_is_taken_over() {
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
        .command(&["run", "slow.yaml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    sb.wait_for("started", "", 100);
    let r = sb.lifeboat(&["run", "other.yaml"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("lock `orders-db` is held by run"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!("pid {}", holder.id())),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "", "no run was created");

    // kill -9: the kernel drops the flock, so the holder is verifiably gone.
    holder.kill().unwrap();
    holder.wait().unwrap();
    sb.kill_group();
    let r = sb.lifeboat(&["run", "other.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let took = sb
        .events(&r.run_id())
        .into_iter()
        .find(|e| e["event"] == "lock_taken_over")
        .unwrap();
    assert_eq!(took["lock"], "orders-db");
}

#[test]
fn a_run_waiting_for_approval_keeps_its_locks() {
    let sb = Sandbox::new();
    sb.write(
        "gate.yaml",
        &runbook(
            "gate",
            "locks: [orders-db]\nsteps:\n  - {id: ok, action: approval, with: {message: go?}}\n",
        ),
    );
    sb.write(
        "other.yaml",
        &runbook(
            "other",
            "locks: [orders-db]\nsteps:\n  - {id: b, action: shell, with: {script: 'true'}}\n",
        ),
    );
    let first = sb.lifeboat(&["run", "gate.yaml"]);
    assert_eq!(first.code, 3);
    let r = sb.lifeboat(&["run", "other.yaml"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("stopped to wait"), "{}", r.stderr);
    assert_eq!(sb.lifeboat(&["resume", &first.run_id(), "--yes"]).code, 0);
    assert_eq!(
        sb.lifeboat(&["run", "other.yaml"]).code,
        0,
        "released once the run finished"
    );
}

/// docs/run-log.md: secret values never appear in the log, stdout or stderr, in any form the templates
/// can produce.
#[test]
fn secrets_never_leak_in_any_form() {
    let sb = Sandbox::new();
    let secret = "Pa55/word+with?odd&chars";
    sb.write(
        "r.yaml",
        &runbook(
            "secret",
            r#"
secrets:
  token: {env: LB_TEST_TOKEN}
steps:
  - id: echo_forms
    action: shell
    with:
      script: |
        echo raw {{ secrets.token }}
        echo upper {{ secrets.token | upper }}
        echo lower {{ secrets.token | lower }}
        echo b64 {{ secrets.token | b64encode }}
        echo url {{ secrets.token | urlencode }}
        echo json {{ secrets.token | tojson }}
        echo slice {{ secrets.token[3:15] }}
        echo reversed {{ secrets.token | reverse }}
        printf '%s' "$TOKEN" | base64
        echo "$TOKEN" >&2
      env: {TOKEN: "{{ secrets.token }}"}
  - id: fail_with_it
    action: shell
    needs: [echo_forms]
    with: {script: "echo 'bad password {{ secrets.token | upper }}' >&2; exit 1"}
"#,
        ),
    );
    let r = sb.lifeboat_env(&["run", "r.yaml"], &[("LB_TEST_TOKEN", secret)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let id = r.run_id();
    let log = std::fs::read_to_string(sb.log_path(&id)).unwrap();
    let show = sb.lifeboat(&["show", &id, "--json"]).stdout;
    let human_log = sb.lifeboat(&["log", &id]).stdout;
    let mut forms = vec![
        secret.to_string(),
        secret.to_uppercase(),
        secret.to_lowercase(),
        secret[3..15].to_string(),
        secret.chars().rev().collect::<String>(),
        "UGE1NS93b3JkK3dpdGg/b2RkJmNoYXJz".to_string(), // base64
        "Pa55%2Fword%2Bwith%3Fodd%26chars".to_string(), // urlencoded
    ];
    forms.push(secret[3..15].to_uppercase());
    for text in [&log, &r.stdout, &r.stderr, &show, &human_log] {
        for f in &forms {
            assert!(!text.contains(f.as_str()), "`{f}` leaked into:\n{text}");
        }
    }
    assert!(log.contains("***"));
    // The step really got the secret: the masked stdout has one line per form.
    let events = sb.events(&id);
    let out = events
        .iter()
        .find(|e| e["event"] == "step_succeeded")
        .unwrap();
    assert!(
        out["outputs"]["stdout"]
            .as_str()
            .unwrap()
            .contains("raw ***"),
        "{out}"
    );
    assert_eq!(events[1]["inputs"]["script"], "***");
    assert_eq!(events[1]["inputs"]["env"]["TOKEN"], "***");
}

#[test]
fn a_missing_secret_or_an_unsupported_field_stops_before_anything_runs() {
    let sb = Sandbox::new();
    sb.write("s.yaml", &runbook("s", "secrets:\n  pw: {env: LB_NOT_SET_ANYWHERE}\nsteps:\n  - {id: a, action: shell, with: {script: 'touch ran'}}\n"));
    let r = sb.lifeboat(&["run", "s.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("environment variable `LB_NOT_SET_ANYWHERE` is not set"),
        "{}",
        r.stderr
    );
    assert!(!sb.path("ran").exists());
    sb.write("pg.yaml", &runbook("pg", "connections:\n  db: {postgres: {url: 'postgres://127.0.0.1/x'}}\nsteps:\n  - {id: a, action: shell, with: {script: 'touch ran'}}\n  - {id: d, action: postgres.backup, needs: [a], with: {connection: db, to: {path: x.dump}, jobs: 2}}\n"));
    let r = sb.lifeboat(&["run", "pg.yaml"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains(
            "step `d`: `encrypt`, `compression_level`, `jobs` and `storage_class` apply to backups streamed to S3"
        ),
        "{}",
        r.stderr
    );
    assert!(!sb.path("ran").exists());
}

#[test]
#[allow(unsafe_code)]
fn sigint_stops_cleanly_with_exit_130_and_resume_finishes() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "int",
            r#"
steps:
  - id: long
    action: shell
    with: {script: "echo started > started; sleep 2; echo long >> side.txt", idempotent: true}
  - id: next
    action: shell
    needs: [long]
    with: {script: "echo next >> side.txt"}
"#,
        ),
    );
    let child = sb
        .command(&["run", "r.yaml", "--grace", "10s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    sb.wait_for("started", "", 100);
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out: common::sandbox::Ran = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, 130, "{}", out.stderr);
    // The running step was allowed to finish; nothing new started.
    assert_eq!(sb.read("side.txt"), "long\n");
    let id = out.run_id();
    assert_eq!(sb.events(&id).last().unwrap()["status"], "interrupted");
    let r = sb.lifeboat(&["resume", &id]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.read("side.txt"), "long\nnext\n");
}

#[test]
fn after_kill_9_resume_asks_before_rerunning_a_step_that_is_not_idempotent() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "crash",
            r#"
steps:
  - id: write
    action: shell
    with: {script: "echo write >> side.txt; echo $$ > pgid; echo started > started; sleep 30"}
  - id: after
    action: shell
    needs: [write]
    with: {script: "echo after >> side.txt"}
"#,
        ),
    );
    let id = sb
        .killed(&["run", "r.yaml"], Kill::Once("started"))
        .unwrap();
    // The shell step was in its own process group and survives the engine: end it like an
    // operator would before resuming.
    sb.kill_group();
    let r = sb.lifeboat(&["resume", &id]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("cut short"), "{}", r.stderr);
    let trace = sb.trace(&id);
    assert!(
        trace.contains(&"step_interrupted:write".to_string()),
        "{trace:?}"
    );
    std::fs::write(sb.path("started"), "").unwrap();
    // The operator checked: run it again.
    assert_eq!(sb.lifeboat(&["approve", &id, "write"]).code, 0);
    let mut resumed = sb
        .command(&["resume", &id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    sb.wait_for("started", "started", 100);
    sb.kill_group();
    let status = resumed.wait().unwrap();
    // The re-run's sleep was killed, so it failed; what matters is that it was run again at all.
    assert_eq!(status.code(), Some(1));
    assert_eq!(sb.read("side.txt"), "write\nwrite\n");
    assert_eq!(sb.lifeboat(&["verify", &id]).code, 0);
}

#[test]
fn verify_names_the_first_tampered_line() {
    let sb = Sandbox::new();
    sb.write("r.yaml", &runbook("t", "steps:\n  - {id: a, action: shell, with: {script: 'echo hi'}}\n  - {id: b, action: shell, needs: [a], with: {script: 'echo ho'}}\n"));
    let r = sb.lifeboat(&["run", "r.yaml"]);
    let id = r.run_id();
    let path = sb.log_path(&id);
    let original = std::fs::read_to_string(&path).unwrap();
    let tampered = original.replacen("\"stdout\":\"hi\\n\"", "\"stdout\":\"HI\\n\"", 1);
    assert_ne!(original, tampered);
    std::fs::write(&path, &tampered).unwrap();
    let v = sb.lifeboat(&["verify", &id]);
    assert_eq!(v.code, 1, "{}", v.stderr);
    assert!(v.stderr.contains("TAMPERED: line 3"), "{}", v.stderr);
    // Dropping the last line is caught by the head anchor.
    let mut lines: Vec<&str> = original.lines().collect();
    lines.pop();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let v = sb.lifeboat(&["verify", &id]);
    assert_eq!(v.code, 1, "{}", v.stderr);
    // And a tampered log is not resumed.
    std::fs::write(&path, &tampered).unwrap();
    let r = sb.lifeboat(&["resume", &id]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("refusing to continue"), "{}", r.stderr);
}

#[test]
fn a_failed_run_resumes_after_the_fix_and_redoes_only_what_was_undone_or_failed() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "fix",
            r#"
steps:
  - id: plain
    action: shell
    with: {script: "echo plain >> side.txt"}
  - id: undoable
    action: shell
    needs: [plain]
    with: {script: "echo undoable >> side.txt"}
    compensate: {action: shell, with: {script: "echo undo >> side.txt"}}
  - id: needs_fix
    action: shell
    needs: [undoable]
    with: {script: "test -f fixed && echo fixed >> side.txt"}
"#,
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(sb.read("side.txt"), "plain\nundoable\nundo\n");
    sb.write("fixed", "");
    let again = sb.lifeboat(&["resume", &r.run_id()]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    // `plain` stays done; `undoable` was undone by its compensation, so it runs again.
    assert_eq!(
        sb.read("side.txt"),
        "plain\nundoable\nundo\nundoable\nfixed\n"
    );
    let events = sb.events(&r.run_id());
    let attempts: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "step_started" && e["step"] == "needs_fix")
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(
        attempts,
        [1, 2],
        "attempt numbers go on counting across a resume"
    );
}

#[test]
fn the_run_timeout_cancels_running_steps_and_rolls_back() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "deadline",
            r#"
steps:
  - id: first
    action: shell
    with: {script: "echo first >> side.txt"}
    compensate: {action: shell, with: {script: "echo undo-first >> side.txt"}}
  - id: slow
    action: shell
    needs: [first]
    with: {script: "sleep 20; echo slow >> side.txt"}
"#,
        ),
    );
    let t0 = std::time::Instant::now();
    let r = sb.lifeboat(&["run", "r.yaml", "--timeout", "1s"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(t0.elapsed() < std::time::Duration::from_secs(15));
    assert_eq!(sb.read("side.txt"), "first\nundo-first\n");
    let trace = sb.trace(&r.run_id());
    assert!(
        trace.contains(&"step_interrupted:slow".to_string()),
        "{trace:?}"
    );
    let last = sb.events(&r.run_id()).pop().unwrap();
    assert!(
        last["summary"]
            .as_str()
            .unwrap()
            .contains("timeout of 1s passed"),
        "{last}"
    );
}

/// On a terminal the gate is a prompt. util-linux `script` gives the run a pseudo-terminal.
fn run_on_a_terminal(sb: &Sandbox, answer: &str) -> common::sandbox::Ran {
    use std::io::Write;
    let cmd = format!("{} run r.yaml", env!("CARGO_BIN_EXE_lifeboat"));
    let mut child = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(sb.dir.path())
        .env("LIFEBOAT_OPERATOR", "ana")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux `script` (Debian's bsdutils) is installed");
    for _ in 0..100 {
        if sb.path("before").exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(answer.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap().into()
}

#[test]
fn on_a_terminal_the_gate_prompts_and_no_fails_the_run_and_rolls_back() {
    let text = runbook(
        "tty",
        r#"
steps:
  - id: before
    action: shell
    with: {script: "touch before"}
    compensate: {action: shell, with: {script: "touch undone"}}
  - id: go
    action: approval
    needs: [before]
    with: {message: "Restart the writers?"}
  - id: after
    action: shell
    needs: [go]
    with: {script: "touch after"}
"#,
    );
    let yes = Sandbox::new();
    yes.write("r.yaml", &text);
    let r = run_on_a_terminal(&yes, "y\n");
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("Restart the writers?") && r.stdout.contains("next: after"),
        "{}",
        r.stdout
    );
    assert!(yes.path("after").exists());
    let id = yes.lifeboat(&["runs", "--json"]).stdout;
    let id: serde_json::Value = serde_json::from_str(&id).unwrap();
    let events = yes.events(id[0]["id"].as_str().unwrap());
    let granted = events
        .iter()
        .find(|e| e["event"] == "approval_granted")
        .unwrap();
    // By the OS account at the terminal, whatever $LIFEBOAT_OPERATOR claims.
    assert_eq!(
        (granted["by"].as_str(), granted["via"].as_str()),
        (Some(common::os_account().as_str()), Some("prompt"))
    );

    let no = Sandbox::new();
    no.write("r.yaml", &text);
    let r = run_on_a_terminal(&no, "n\n");
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(!no.path("after").exists());
    assert!(no.path("undone").exists(), "declining rolls back");
}

#[test]
fn metrics_give_each_runbooks_last_success_for_the_textfile_collector() {
    let sb = Sandbox::new();
    sb.write(
        "ok.yaml",
        &runbook(
            "nightly-backup",
            "steps:\n  - {id: a, action: shell, with: {script: 'true'}}\n",
        ),
    );
    sb.write(
        "bad.yaml",
        &runbook(
            "restore-check",
            "steps:\n  - {id: a, action: shell, with: {script: 'exit 1'}}\n",
        ),
    );
    let now = || jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
    let before = now();
    assert_eq!(sb.lifeboat(&["run", "ok.yaml"]).code, 0);
    assert_eq!(sb.lifeboat(&["run", "bad.yaml"]).code, 1);
    let after = now();
    let m = sb.lifeboat(&["metrics"]);
    assert_eq!(m.code, 0, "{}", m.stderr);
    let value = |prefix: &str| -> Option<f64> {
        m.stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
    };
    let success = value("lifeboat_last_success_timestamp_seconds{runbook=\"nightly-backup\"} ")
        .expect("a last success");
    assert!(
        before - 1.0 <= success && success <= after + 1.0,
        "{success} not in [{before}, {after}]"
    );
    assert_eq!(
        value("lifeboat_last_success_timestamp_seconds{runbook=\"restore-check\"}"),
        None,
        "it never succeeded"
    );
    let took = value("lifeboat_run_duration_seconds{runbook=\"restore-check\",status=\"failed\"} ")
        .unwrap();
    assert!(took >= 0.0 && took <= after - before, "{took}");
    assert_eq!(
        value("lifeboat_runs{runbook=\"nightly-backup\",status=\"succeeded\"} "),
        Some(1.0)
    );

    // --out replaces the file whole, as the textfile collector needs, and leaves nothing beside it.
    let r = sb.lifeboat(&["metrics", "--out", "lifeboat.prom"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert_eq!(sb.read("lifeboat.prom"), m.stdout);
    let leftovers: Vec<_> = std::fs::read_dir(sb.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

const FOR_EACH: &str = r#"
params:
  databases: {type: array, items: string, default: [orders]}
steps:
  - id: backup
    action: shell
    for_each: "{{ params.databases }}"
    max_parallel: 2
    with: {script: "sleep 0.2; echo {{ item | shell_quote }} >> done.txt", idempotent: true}
  - id: report
    action: shell
    needs: [backup]
    with: {argv: [sh, -c, "echo \"$1\" > report.txt", report, "{{ steps.backup.outputs | length }} {{ steps.backup.status }}"]}
"#;

/// `for_each` over a list param given on the command line: `plan` shows one step per item with
/// its own rendered inputs, and a run killed with -9 at a random moment is finished by resume,
/// every item done.
#[test]
fn for_each_is_planned_per_item_and_a_run_killed_at_random_resumes_to_every_item() {
    let sb = Sandbox::new();
    sb.write("r.yaml", &runbook("each", FOR_EACH));
    let dbs = "databases=orders,users,billing,audit,events";
    let plan = sb.lifeboat(&["plan", "r.yaml", "-p", dbs]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout.contains("backup[billing] (shell)"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("echo 'billing' >> done.txt"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(
            "needs:   backup[orders], backup[users], backup[billing], backup[audit], backup[events]"
        ),
        "{}",
        plan.stdout
    );
    // Kill at a moment between nothing done and almost all done.
    let delay = random_moment(std::time::Duration::from_millis(100), 500);
    let id = sb.killed(&["run", "r.yaml", "-p", dbs], Kill::After(delay));
    let id = id.unwrap_or_else(|| {
        // Killed before the run was recorded: nothing ran, and a new run is the way on.
        let r = sb.lifeboat(&["run", "r.yaml", "-p", dbs]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.run_id()
    });
    let r = sb.lifeboat(&["resume", &id]);
    assert!(r.code == 0, "killed after {delay:?}: {}", r.stderr);
    let mut done: Vec<String> = sb.read("done.txt").lines().map(String::from).collect();
    done.sort();
    done.dedup();
    assert_eq!(
        done,
        ["audit", "billing", "events", "orders", "users"],
        "killed after {delay:?}"
    );
    assert_eq!(sb.read("report.txt"), "5 succeeded\n");
    let started: Vec<String> = sb
        .events(&id)
        .iter()
        .filter(|e| e["event"] == "step_succeeded")
        .map(|e| e["step"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(started.len(), 6, "each step succeeded once: {started:?}");
}

/// `action: runbook`: a child run with its own log, linked both ways; lifeboat killed with -9
/// while the child runs leaves a parent that `resume` finishes by resuming the same child (the
/// child's lifeboat, orphaned, is ended first), never by starting a second one.
#[test]
fn a_child_run_is_linked_both_ways_and_resumed_not_restarted_after_a_crash() {
    let sb = Sandbox::new();
    sb.write(
        "child.yaml",
        &runbook(
            "child",
            r#"
params:
  db: {type: string}
steps:
  - id: dump
    action: shell
    with:
      script: "if [ -f started ]; then echo {{ params.db | shell_quote }} >> side.txt; else echo $$ > pgid; echo started > started; sleep 300; fi"
      idempotent: true
"#,
        ),
    );
    sb.write(
        "parent.yaml",
        &runbook(
            "parent",
            r#"
steps:
  - id: call
    action: runbook
    with: {file: child.yaml, params: {db: orders}}
  - {id: after, action: shell, needs: [call], with: {argv: [echo, "{{ steps.call.outputs.run }}"]}}
"#,
        ),
    );
    let id = sb
        .killed(
            &["run", "parent.yaml", "--grace", "1s"],
            Kill::Once("started"),
        )
        .unwrap();
    let r = sb.lifeboat(&["resume", &id, "--grace", "1s"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.read("side.txt"), "orders\n");
    let runs: serde_json::Value =
        serde_json::from_str(&sb.lifeboat(&["runs", "--json"]).stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2, "one parent, one child: {runs:?}");
    let child = runs.iter().find(|r| r["runbook"] == "child").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let outputs = sb.outputs(&id, "call");
    assert_eq!(outputs["run"], child.as_str());
    assert_eq!(outputs["status"], "succeeded");
    let events = sb.events(&child);
    assert_eq!(events[0]["parent"], format!("{id}/call"));
    assert!(
        events.iter().any(|e| e["event"] == "run_resumed"),
        "the child was resumed"
    );
    assert_eq!(sb.lifeboat(&["verify", &child]).code, 0);
    // The first attempt's `sleep 300`, twice orphaned, is gone.
    let pgid: i32 = sb.read("pgid").trim().parse().unwrap();
    #[allow(unsafe_code)]
    // SAFETY: signal 0 only checks whether the group exists.
    let alive = || unsafe { libc::killpg(pgid, 0) == 0 };
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        !alive()
    });
    assert!(gone, "the first attempt's processes outlived both resumes");
}

/// A child that fails fails its step with the child's own words, and the parent rolls back.
#[test]
fn a_failed_child_run_fails_its_step_with_the_childs_reason() {
    let sb = Sandbox::new();
    sb.write(
        "child.yaml",
        &runbook("child", "steps:\n  - {id: broken, action: shell, with: {script: 'echo disk full >&2; exit 1'}}\n"),
    );
    sb.write(
        "parent.yaml",
        &runbook(
            "parent",
            "steps:\n  - {id: call, action: runbook, with: {file: child.yaml}}\n",
        ),
    );
    let r = sb.lifeboat(&["run", "parent.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let last = sb.events(&r.run_id()).pop().unwrap();
    let summary = last["summary"].as_str().unwrap();
    assert!(
        summary.contains("failed: step `broken` failed: `sh` exited with status 1: disk full"),
        "{summary}"
    );
}

/// `on_failure` and `finally` with lifeboat killed with -9 at a random moment: resume finishes
/// the run failed, its ending steps each done, and the failure that ended it still the one
/// reported.
#[test]
fn a_run_killed_while_its_ending_steps_run_is_finished_by_resume() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "ending",
            r#"
steps:
  - {id: copy, action: shell, with: {script: "sleep 0.2; echo disk full >&2; exit 1", idempotent: true}}
on_failure:
  - id: page
    action: shell
    with: {argv: [sh, -c, 'sleep 0.2; echo "$1" >> paged.txt', page, "{{ run.failed_step }}: {{ run.error }}"], idempotent: true}
finally:
  - {id: tidy, action: shell, with: {script: "sleep 0.2; echo {{ run.status }} >> tidy.txt", idempotent: true}}
"#,
        ),
    );
    let delay = random_moment(std::time::Duration::from_millis(150), 500);
    let Some(id) = sb.killed(&["run", "r.yaml"], Kill::After(delay)) else {
        return; // killed before the run existed: nothing ran
    };
    let events = sb.events(&id);
    let finished = events.iter().any(|e| e["event"] == "run_finished");
    if !finished {
        let r = sb.lifeboat(&["resume", &id]);
        assert_eq!(r.code, 1, "killed after {delay:?}: {}", r.stderr);
    }
    let last = sb.events(&id).pop().unwrap();
    assert_eq!(last["status"], "failed", "killed after {delay:?}");
    assert!(
        last["summary"]
            .as_str()
            .unwrap()
            .starts_with("step `copy` failed: `sh` exited with status 1: disk full"),
        "killed after {delay:?}: {last}"
    );
    assert!(
        sb.read("paged.txt")
            .starts_with("copy: `sh` exited with status 1: disk full\n"),
        "killed after {delay:?}"
    );
    assert!(
        sb.read("tidy.txt").starts_with("failed\n"),
        "killed after {delay:?}"
    );
}
