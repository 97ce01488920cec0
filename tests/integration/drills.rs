//! `lifeboat drill`: the parts in order, the verdict from the log, the reports, the targets guard;
//! and the shipped scenarios against real PostgreSQL and S3, with the HTML report drawn by
//! headless Chromium.

use crate::common;

use common::sandbox::{Sandbox, runbook};

/// A service that is healthy while the file `healthy` exists: no server needed to drill it.
const FLAGFILE: &str = r#"
objectives: {rto: 1h}
params:
  fix: {type: boolean, default: true}
connections:
  drill_db: {postgres: {url: "postgres://x@127.0.0.1:1/drill"}}
  prod_db: {postgres: {url: "postgres://x@127.0.0.1:1/prod"}}
steps:
  - {id: go, action: approval, with: {message: Repair it?}}
  - {id: repair, action: shell, needs: [go], when: "params.fix", with: {argv: [touch, healthy]}}
  - {id: audit, action: shell, needs: [go], with: {argv: ["true"], changes: false}}
drill:
  targets: [drill_db]
  scenarios:
    flag-removed:
      description: Someone deletes the flag.
      steady_state:
        - {id: healthy, action: shell, with: {argv: [test, -f, healthy], changes: false}}
      inject:
        - {id: remove_flag, action: shell, with: {argv: [rm, healthy]}}
    strict:
      objectives: {rto: 1ms, rpo: 1h}
      steady_state:
        - {id: healthy, action: shell, with: {argv: [test, -f, healthy], changes: false}}
      inject:
        - {id: remove_it, action: shell, with: {argv: [rm, healthy]}}
    touches-prod:
      steady_state:
        - {id: healthy, action: shell, with: {argv: [test, -f, healthy], changes: false}}
      inject:
        - {id: drop_prod, action: postgres.query, with: {connection: prod_db, sql: "drop table t", writes: true}}
"#;

fn json(r: &common::sandbox::Ran) -> serde_json::Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", r.stdout, r.stderr))
}

fn started(sb: &Sandbox, run: &str, step: &str) -> bool {
    sb.trace(run).contains(&format!("step_started:{step}"))
}

fn only_run(sb: &Sandbox) -> String {
    let r = sb.lifeboat(&["runs", "--json"]);
    let runs = json(&r);
    let runs = runs.as_array().unwrap();
    runs[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn a_drill_runs_its_parts_in_order_and_is_judged_from_its_log() {
    let sb = Sandbox::new();
    sb.write("d.yaml", &runbook("flagfile", FLAGFILE));

    // Not healthy to begin with: the fault is never injected.
    let r = sb.lifeboat(&[
        "drill",
        "d.yaml",
        "--scenario",
        "flag-removed",
        "--yes",
        "--json",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let rep = json(&r);
    assert_eq!(rep["passed"], false);
    assert_eq!(rep["steady_before"], "failed");
    assert!(
        rep["reasons"]
            .to_string()
            .contains("did not hold before the fault"),
        "{rep}"
    );
    let run = rep["run"].as_str().unwrap();
    assert!(!started(&sb, run, "remove_flag") && !started(&sb, run, "repair"));

    // Healthy, broken, repaired, healthy again.
    sb.write("healthy", "");
    let r = sb.lifeboat(&[
        "drill",
        "d.yaml",
        "--scenario",
        "flag-removed",
        "--yes",
        "--json",
        "--report",
        "out/report.html",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep = json(&r);
    let run = rep["run"].as_str().unwrap().to_string();
    assert_eq!(rep["passed"], true, "{rep}");
    assert_eq!(
        (rep["steady_before"].as_str(), rep["steady_after"].as_str()),
        (Some("held"), Some("held"))
    );
    let order: Vec<String> = sb
        .trace(&run)
        .into_iter()
        .filter_map(|t| t.strip_prefix("step_succeeded:").map(String::from))
        .collect();
    assert_eq!(order[..2], ["before.healthy", "remove_flag"]);
    assert_eq!(order.last().unwrap(), "after.healthy");
    // RTO is the log's incident-to-healthy span, to the millisecond.
    let ts = |step: &str| -> i64 {
        let e = sb
            .events(&run)
            .into_iter()
            .find(|e| e["event"] == "step_succeeded" && e["step"] == step)
            .unwrap();
        e["ts"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_millisecond()
    };
    assert_eq!(
        rep["rto_ms"].as_i64().unwrap(),
        ts("after.healthy") - ts("remove_flag")
    );
    assert_eq!(rep["objectives"]["rto_ms"], 3_600_000);
    // No restore step and no RPO objective: measured as nothing, said so, not failed.
    assert!(rep["rpo_ms"].is_null());
    assert!(
        rep["notes"]
            .to_string()
            .contains("RPO could not be measured"),
        "{rep}"
    );
    let started_ev = &sb.events(&run)[0];
    assert_eq!(started_ev["drill"]["scenario"], "flag-removed");
    assert_eq!(
        started_ev["drill"]["inject"],
        serde_json::json!(["remove_flag"])
    );
    // The report: Markdown and HTML, tied to the log by its hash.
    let md = sb.read("out/report.md");
    let html = sb.read("out/report.html");
    let verified = json(&sb.lifeboat(&["verify", &run, "--json"]));
    let hash = rep["evidence"]["log_hash"].as_str().unwrap();
    assert!(!hash.is_empty());
    assert_eq!(verified["last_hash"].as_str(), Some(hash), "{verified}");
    assert!(
        md.starts_with("# Drill PASSED: flagfile / flag-removed"),
        "{md}"
    );
    assert!(md.contains(hash) && html.contains(hash));
    assert!(html.contains("<svg"));
    for external in ["<script", "<link", "src=", "url(", "@import"] {
        assert!(
            !html.contains(external),
            "the report is self-contained, but has {external}"
        );
    }
    // The same numbers again from the log alone.
    let again = json(&sb.lifeboat(&["drill-report", &run, "--json"]));
    assert_eq!(again["rto_ms"], rep["rto_ms"]);
    assert_eq!(again["passed"], true);

    // Recovery that does not repair: the steady state does not come back.
    let r = sb.lifeboat(&[
        "drill",
        "d.yaml",
        "--scenario",
        "flag-removed",
        "--yes",
        "--json",
        "-p",
        "fix=false",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let rep = json(&r);
    assert_eq!(rep["steady_after"], "failed");
    assert!(rep["rto_ms"].is_null());
    assert!(
        rep["reasons"]
            .to_string()
            .contains("did not hold after the recovery"),
        "{rep}"
    );

    // Objectives missed: RTO over 1ms, and an RPO objective nothing can measure.
    sb.write("healthy", "");
    let r = sb.lifeboat(&["drill", "d.yaml", "--scenario", "strict", "--yes", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let rep = json(&r);
    let reasons = rep["reasons"].to_string();
    assert!(reasons.contains("exceeds the objective of 1ms"), "{rep}");
    assert!(reasons.contains("RPO could not be measured"), "{rep}");
    assert_eq!(rep["steady_after"], "held");
    let metrics = sb.lifeboat(&["metrics"]).stdout;
    assert!(
        metrics.contains("lifeboat_drill_passed{runbook=\"flagfile\",scenario=\"strict\"} 0\n"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("lifeboat_drill_passed{runbook=\"flagfile\",scenario=\"flag-removed\"} 0\n"),
        "the newest flag-removed drill failed:\n{metrics}"
    );
    assert!(
        metrics.contains("lifeboat_drill_rto_seconds{runbook=\"flagfile\",scenario=\"strict\"} "),
        "{metrics}"
    );
}

#[test]
fn connections_that_are_not_drill_targets_need_i_know() {
    let sb = Sandbox::new();
    sb.write("d.yaml", &runbook("flagfile", FLAGFILE));
    sb.write("healthy", "");
    let r = sb.lifeboat(&["drill", "d.yaml", "--scenario", "touches-prod", "--yes"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("`prod_db`")
            && r.stderr.contains("drill.targets")
            && r.stderr.contains("--i-know"),
        "{}",
        r.stderr
    );
    assert!(
        !sb.path(".lifeboat/runs").exists()
            || std::fs::read_dir(sb.path(".lifeboat/runs"))
                .unwrap()
                .next()
                .is_none(),
        "nothing was started"
    );
    let r = sb.lifeboat(&[
        "drill",
        "d.yaml",
        "--scenario",
        "touches-prod",
        "--yes",
        "--i-know",
        "--json",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let rep = json(&r);
    assert_eq!(rep["outside_targets"], serde_json::json!(["prod_db"]));
    assert!(rep["notes"].to_string().contains("--i-know"), "{rep}");
    assert!(rep["reasons"].to_string().contains("not injected"), "{rep}");
    assert_eq!(
        sb.events(rep["run"].as_str().unwrap())[0]["drill"]["outside_targets"],
        serde_json::json!(["prod_db"])
    );
    // A typo in the scenario name is named, with the scenarios there are.
    let r = sb.lifeboat(&["drill", "d.yaml", "--scenario", "flag-remove"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("did you mean `flag-removed`?"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_drill_stopped_at_an_approval_resumes_and_is_reported_from_its_log() {
    let sb = Sandbox::new();
    sb.write("d.yaml", &runbook("flagfile", FLAGFILE));
    sb.write("healthy", "");
    let r = sb.lifeboat(&[
        "drill",
        "d.yaml",
        "--scenario",
        "flag-removed",
        "--non-interactive",
    ]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let run = only_run(&sb);
    assert!(
        !sb.path("healthy").exists(),
        "the fault was injected before the gate"
    );
    assert_eq!(sb.lifeboat(&["approve", &run, "go"]).code, 0);
    let r = sb.lifeboat(&["resume", &run]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        started(&sb, &run, "after.healthy"),
        "resume ran the scenario's checks too"
    );
    let r = sb.lifeboat(&["drill-report", &run, "--report", "r"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(sb.read("r.md").contains("Drill PASSED"));
    // A run that is not a drill has no drill report.
    sb.write(
        "plain.yaml",
        &runbook(
            "plain",
            "steps:\n  - {id: a, action: wait, with: {for: 1ms}}\n",
        ),
    );
    let plain = sb.lifeboat(&["run", "plain.yaml"]).run_id();
    let r = sb.lifeboat(&["drill-report", &plain]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("is not a drill"), "{}", r.stderr);
}

/// The README's main job: throwaway PostgreSQL and S3, a backup, more writes, the data-corruption
/// drill. Then the full-disaster drill on the same services, and the HTML report in Chromium.
#[test]
fn main_job_script_drills_data_corruption_then_full_disaster_against_real_services() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("demo");
    let out = std::process::Command::new(common::root().join("scripts/drill-demo"))
        .arg(&dir)
        .env("LIFEBOAT", env!("CARGO_BIN_EXE_lifeboat"))
        .env("KEEP", "1")
        .output()
        .unwrap();
    let _stop = Stop(dir.clone());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let html_path = dir.join("drill-report.html");
    assert!(
        stdout.contains(&format!("report: {}", html_path.display())),
        "{stdout}"
    );
    assert!(
        stderr.contains("orders now: 1000 "),
        "the restore brought back the backup: {stderr}"
    );
    let md = std::fs::read_to_string(dir.join("drill-report.md")).unwrap();
    assert!(
        md.starts_with("# Drill PASSED: postgres-restore / data-corruption"),
        "{md}"
    );

    let state = dir.join("state").display().to_string();
    let lifeboat = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(args)
            .env("PGPASSWORD", "demo-Pg-pw-31")
            .output()
            .unwrap();
        common::sandbox::Ran::from(o)
    };
    let runs = json(&lifeboat(&["runs", "--json", "--state", &state]));
    let drill_run = runs[0]["id"].as_str().unwrap().to_string();
    let rep = json(&lifeboat(&[
        "drill-report",
        &drill_run,
        "--json",
        "--state",
        &state,
    ]));
    assert_eq!(rep["passed"], true, "{rep}");
    assert_eq!(rep["restored_as_of"]["step"], "restore");
    assert_eq!(rep["restored_as_of"]["output"], "consistent_at");
    // RPO: the backup is older than the incident by the time the later writes took, and more.
    let rpo = rep["rpo_ms"].as_u64().unwrap();
    let asof: jiff::Timestamp = rep["restored_as_of"]["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let incident: jiff::Timestamp = rep["incident_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        rpo as i64,
        incident.as_millisecond() - asof.as_millisecond()
    );
    assert!(rpo > 0 && rep["rto_ms"].as_u64().unwrap() > 0);
    let metrics = lifeboat(&["metrics", "--state", &state]).stdout;
    assert!(metrics.contains(&format!("lifeboat_drill_rpo_seconds{{runbook=\"postgres-restore\",scenario=\"data-corruption\"}} {}\n", rpo as f64 / 1000.0)), "{metrics}");

    // The full disaster, on the same services: every table gone, rebuilt from the backup.
    let pg_port = std::fs::read_to_string(dir.join("pg/port"))
        .unwrap()
        .trim()
        .to_string();
    let s3_port = std::fs::read_to_string(dir.join("s3/port"))
        .unwrap()
        .trim()
        .to_string();
    let identity = std::fs::read_to_string(dir.join("backup.agekey")).unwrap();
    let identity = identity
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args([
            "drill",
            &common::root()
                .join("runbooks/postgres-restore.yaml")
                .display()
                .to_string(),
            "--scenario",
            "full-disaster",
            "--yes",
            "--json",
            "-p",
            "min_orders=1000",
            "-p",
            &format!("pg_url=postgres://postgres@127.0.0.1:{pg_port}"),
            "-p",
            "s3_bucket=backups",
            "-p",
            &format!("s3_endpoint=http://127.0.0.1:{s3_port}"),
            "-p",
            "s3_path_style=true",
            "--state",
            &state,
        ])
        .env("PGPASSWORD", "demo-Pg-pw-31")
        .env("LIFEBOAT_S3_ACCESS_KEY", common::s3::ACCESS_KEY)
        .env("LIFEBOAT_S3_SECRET_KEY", common::s3::SECRET_KEY)
        .env("BACKUP_AGE_IDENTITY", identity)
        .output()
        .unwrap();
    let r = common::sandbox::Ran::from(o);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep = json(&r);
    assert_eq!(rep["passed"], true, "{rep}");
    assert_eq!(rep["steps"][1]["id"], "drop_everything");
    assert!(
        !r.stdout.contains(identity) && !r.stderr.contains(identity),
        "the age identity leaked"
    );

    // The HTML report as a browser draws it.
    let (w, h, px) = screenshot(&html_path, &work.path().join("shot.png"));
    let (r0, g0, b0) = lifeboat::drill::PASSED_RGB;
    let banner = |x: u32, y: u32| px(x, y) == (r0, g0, b0);
    // The passed banner spans the top of the page; the timeline draws green attempt bars below.
    assert!(
        (0..w).step_by(50).all(|x| banner(x, 5)),
        "no green banner across the top"
    );
    let bars = (300..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| px(x, y) == (0x2e, 0x7d, 0x32))
        .count();
    assert!(
        bars > 2000,
        "the timeline has no attempt bars ({bars} pixels)"
    );
}

/// The page as headless Chromium draws it, 1100 by 900, decoded.
fn screenshot(
    html: &std::path::Path,
    shot: &std::path::Path,
) -> (u32, u32, impl Fn(u32, u32) -> (u8, u8, u8) + use<>) {
    let o = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--hide-scrollbars",
            "--window-size=1100,900",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium runs (scripts/setup-test-env installs it)");
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    decode(&std::fs::read(shot).unwrap())
}

/// Width, height, and the RGB of a pixel of a PNG.
fn decode(bytes: &[u8]) -> (u32, u32, impl Fn(u32, u32) -> (u8, u8, u8) + use<>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let (w, h) = (info.width, info.height);
    let bpp = info.line_size / w as usize;
    assert!(bpp >= 3, "8-bit RGB(A) expected, got {:?}", info.color_type);
    let stride = info.line_size;
    (w, h, move |x: u32, y: u32| {
        let i = y as usize * stride + x as usize * bpp;
        (buf[i], buf[i + 1], buf[i + 2])
    })
}

/// Stops the services the script left running (KEEP=1), whatever the test's outcome.
struct Stop(std::path::PathBuf);

impl Drop for Stop {
    fn drop(&mut self) {
        common::stop_service("s3-server", &self.0.join("s3"));
        common::stop_service("pg-cluster", &self.0.join("pg"));
    }
}

/// The recovery is what a drill tests. The steady state here comes back by itself (the inject
/// step breaks nothing that lasts), so only the recovery steps' own outcomes can fail the drill.
#[test]
fn a_drill_fails_when_its_recovery_did_not_work_even_if_the_run_went_on() {
    let drill = |recovery: &str| {
        format!(
            r#"
objectives: {{rto: 1h}}
steps:
{recovery}
drill:
  targets: []
  scenarios:
    blip:
      steady_state:
        - {{id: up, action: shell, with: {{argv: ["true"], changes: false}}}}
      inject:
        - {{id: blip, action: shell, with: {{argv: ["true"]}}}}
"#
        )
    };
    let fails = "  - {id: restore, action: shell, on_failure: continue, with: {argv: [sh, -c, 'echo \"no backup ![pixel](http://tracker.invalid/p.png) <b>x</b>\" >&2; exit 1']}}\n";
    let fails2 =
        "  - {id: restore2, action: shell, on_failure: continue, with: {argv: [\"false\"]}}\n";
    let works = "  - {id: reindex, action: shell, with: {argv: [\"true\"]}}\n";
    let skipped = "  - {id: promote, action: shell, when: \"false\", with: {argv: [\"true\"]}}\n";
    let cases: [(&str, String, bool, &str); 5] = [
        (
            "every recovery step failed",
            format!("{fails}{fails2}"),
            false,
            "recovery step `restore` failed (`on_failure: continue` let the run go on): ",
        ),
        (
            "one of two failed",
            format!("{fails}{works}"),
            false,
            "recovery step `restore` failed",
        ),
        (
            "every recovery step skipped",
            skipped.to_string(),
            false,
            "no recovery step ran",
        ),
        (
            "one skipped, one worked",
            format!("{skipped}{works}"),
            true,
            "",
        ),
        ("every recovery step worked", works.to_string(), true, ""),
    ];
    for (case, steps, passes, reason) in cases {
        let sb = Sandbox::new();
        sb.write("d.yaml", &runbook("blip", &drill(&steps)));
        let r = sb.lifeboat(&[
            "drill",
            "d.yaml",
            "--scenario",
            "blip",
            "--yes",
            "--json",
            "--report",
            "out/r.html",
        ]);
        let rep = json(&r);
        assert_eq!(
            rep["status"], "succeeded",
            "{case}: the run itself went on: {rep}"
        );
        assert_eq!(rep["steady_after"], "held", "{case}");
        assert_eq!(rep["passed"], passes, "{case}: {rep}");
        assert_eq!(r.code, if passes { 0 } else { 1 }, "{case}: {}", r.stderr);
        if !passes {
            assert!(rep["reasons"].to_string().contains(reason), "{case}: {rep}");
            if case == "every recovery step failed" {
                assert!(
                    rep["reasons"].to_string().contains("no backup"),
                    "{case}: the error is given"
                );
                assert!(
                    rep["reasons"].to_string().contains("`restore2` failed"),
                    "{case}"
                );
            }
            let md = sb.read("out/r.md");
            assert!(md.contains("# Drill FAILED"), "{case}: {md}");
            if case == "every recovery step failed" {
                // The error is in the report as text: no image fetched, no HTML.
                assert!(md.contains("!\\[pixel\\](http"), "{case}: {md}");
                assert!(!md.contains("![pixel]"), "{case}: {md}");
                let raw_tag = md.match_indices('<').any(|(i, _)| !md[..i].ends_with('\\'));
                assert!(!raw_tag, "{case}: {md}");
            }
        }
    }
}

/// A steady-state check compares after with before: `before.outputs` in its `assert` is what the
/// same check returned before the fault (in that first pass, its own outputs). A recovery that
/// brought back less than the fault took is caught; one that brought back enough passes.
#[test]
fn a_steady_state_check_compares_after_with_before() {
    let drill = |restored: u32| {
        format!(
            r#"
steps:
  - {{id: restore, action: shell, with: {{script: "echo {restored} > rows"}}}}
drill:
  targets: []
  scenarios:
    lose-rows:
      steady_state:
        - id: rows
          action: shell
          with: {{script: "cat rows", changes: false}}
          # After recovery at least what there was before, less the 2 rows the fault deleted.
          assert: "outputs.stdout | trim | int >= (before.outputs.stdout | trim | int) - 2"
      inject:
        - {{id: delete_rows, action: shell, with: {{script: "echo 90 > rows"}}}}
"#
        )
    };
    for (restored, passes) in [(98, true), (95, false)] {
        let sb = Sandbox::new();
        sb.write("rows", "100\n");
        sb.write("d.yaml", &runbook("rows", &drill(restored)));
        let r = sb.lifeboat(&["drill", "d.yaml", "--scenario", "lose-rows", "--yes"]);
        let run = r.run_id();
        let after = sb
            .events(&run)
            .into_iter()
            .filter(|e| e["step"] == "after.rows")
            .map(|e| e["event"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>();
        if passes {
            assert_eq!(r.code, 0, "{}", r.stderr);
            assert!(after.contains(&"step_succeeded".to_string()), "{after:?}");
        } else {
            assert_ne!(r.code, 0, "{}", r.stderr);
            let failed = sb
                .events(&run)
                .into_iter()
                .find(|e| e["step"] == "after.rows" && e["event"] == "step_failed")
                .expect("the check after recovery failed");
            assert!(
                failed["error"].as_str().unwrap().contains(
                    "assert `outputs.stdout | trim | int >= (before.outputs.stdout | trim | int) - 2` is false"
                ),
                "{failed}"
            );
        }
    }
}

/// `lifeboat report RUN` for a run that is not a drill: who approved what and when, the failed
/// attempt and the rollback, outputs with the secret masked, the log's hash; the HTML page as
/// headless Chromium draws it (a red banner for a failed run, the timeline's bars).
#[test]
fn any_runs_report_has_its_timeline_approvals_errors_and_evidence() {
    let sb = common::sandbox::Sandbox::new();
    let secret = "Rpt-secret-8f3Kq2";
    sb.write(
        "r.yaml",
        &common::sandbox::runbook(
            "incident",
            r#"
secrets:
  token: {env: REPORT_TOKEN}
steps:
  - id: fence
    action: shell
    with: {argv: [echo, "fenced with {{ secrets.token }}"]}
    compensate: {action: shell, with: {argv: [echo, unfenced]}}
  - {id: gate, action: approval, needs: [fence], with: {message: "promote the replica?"}}
  - id: promote
    action: shell
    needs: [gate]
    retry: {attempts: 2, delay: 10ms}
    with: {script: "echo replica lag too high >&2; exit 1"}
"#,
        ),
    );
    let env = [("REPORT_TOKEN", secret)];
    let r = sb.lifeboat_env(&["run", "r.yaml", "--non-interactive"], &env);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let id = r.run_id();
    assert_eq!(sb.lifeboat(&["approve", &id, "gate"]).code, 0);
    let r = sb.lifeboat_env(&["resume", &id], &env);
    assert_eq!(r.code, 1, "{}", r.stderr);

    let html = sb.path("out/report.html");
    let md = sb.path("out/report.md");
    let r = sb.lifeboat(&[
        "report",
        &id,
        "--html",
        html.to_str().unwrap(),
        "--md",
        md.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rep["status"], "failed");
    assert_eq!(rep["approvals"][0]["step"], "gate");
    assert_eq!(rep["approvals"][0]["via"], "command");
    assert_eq!(rep["takeovers"][0]["how"], "resumed");
    let ids: Vec<&str> = rep["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fence", "gate", "promote"]);
    assert_eq!(rep["steps"][2]["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(rep["steps"][0]["compensation"]["outcome"], "succeeded");
    let verified = sb.lifeboat(&["verify", &id]);
    let hash = format!("{}{}", verified.stdout, verified.stderr);
    let md_text = std::fs::read_to_string(&md).unwrap();
    let html_text = std::fs::read_to_string(&html).unwrap();
    for text in [&r.stdout, &md_text, &html_text] {
        assert!(!text.contains(secret), "the secret leaked into a report");
        assert!(
            text.contains("replica lag too high"),
            "the error is missing"
        );
    }
    assert!(md_text.contains("| `gate` | approved |"), "{md_text}");
    assert!(
        hash.split_whitespace()
            .any(|w| w.len() == 64 && md_text.contains(w) && html_text.contains(w)),
        "the log's hash is not in the reports: {hash}"
    );

    let (w, h, px) = screenshot(&html, &sb.path("shot.png"));
    let red = lifeboat::drill::FAILED_RGB;
    assert!(
        (0..w).step_by(50).all(|x| px(x, 5) == red),
        "no red banner across the top"
    );
    let failed_bars = (100..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            // The bars' red (#c62828), or its blend with the band where a thin bar's edge falls.
            let (r, g, b) = px(x, y);
            r > 0xb0 && g < 0x90 && b < 0x90
        })
        .count();
    // Two failed attempts of a few milliseconds in a run that waited for its approval: bars of
    // the least width the timeline draws (2 px by 14), each.
    assert!(
        failed_bars >= 40,
        "no failed attempt bars ({failed_bars} pixels)"
    );
}
