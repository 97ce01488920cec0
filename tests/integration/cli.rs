//! The command line's contract: exit codes, where output goes, formats.

use crate::common;

use std::process::Command;

fn lifeboat(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(args)
        .current_dir(common::root())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn validate_exit_codes_and_streams() {
    let (code, stdout, stderr) = lifeboat(&["validate", "runbooks", "examples"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.is_empty(),
        "validate prints data only with --format json"
    );
    assert!(stderr.contains("runbook(s) valid"));

    let (code, _, stderr) = lifeboat(&["validate", "tests/fixtures/invalid/cycles.yaml"]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with(
            "tests/fixtures/invalid/cycles.yaml:7:13: error[LB0103]: dependency cycle"
        ),
        "{stderr}"
    );

    let (code, stdout, _) = lifeboat(&[
        "validate",
        "--format",
        "json",
        "tests/fixtures/invalid/missing-field.yaml",
    ]);
    assert_eq!(code, 2);
    let d: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(d["code"], "LB0011");
    assert_eq!(
        (d["line"].as_u64(), d["column"].as_u64()),
        (Some(9), Some(5))
    );

    let (code, _, stderr) = lifeboat(&["validate", "no/such/file.yaml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("error[LB0005]"), "{stderr}");
}

#[test]
fn plan_formats() {
    let (code, stdout, _) = lifeboat(&["plan", "examples/orders-db-restore.yaml"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("Plan for orders-db-restore 2.1.0"));
    let (code, stdout, _) = lifeboat(&[
        "plan",
        "examples/orders-db-restore.yaml",
        "--format",
        "json",
        "-p",
        "region=eu-west-1",
    ]);
    assert_eq!(code, 0);
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(plan["params"]["region"], "eu-west-1");
    assert_eq!(
        plan["waves"][0],
        serde_json::json!(["stop_writers", "newest_backup"])
    );
    let (code, stdout, _) = lifeboat(&[
        "plan",
        "examples/orders-db-restore.yaml",
        "--format",
        "mermaid",
    ]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("flowchart TD"));
    let (code, stdout, _) =
        lifeboat(&["plan", "examples/orders-db-restore.yaml", "--format", "dot"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("digraph"));
}

#[test]
fn plan_param_errors_point_at_the_declaration() {
    let (code, stdout, stderr) = lifeboat(&[
        "plan",
        "runbooks/region-failover.yaml",
        "-p",
        "dr_region=mars",
    ]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains(
            "error[LB0133]: -p dr_region=mars: `mars` is not one of us-east-1, eu-west-1"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("error[LB0132]: param `dr_address` is required"),
        "{stderr}"
    );
    let (code, _, stderr) = lifeboat(&["plan", "runbooks/region-failover.yaml", "-p", "novalue"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("name=value"));
}

/// The runbook's own `timeout` is in the plan, in text and in JSON.
#[test]
fn plan_shows_the_runbooks_timeout() {
    let sb = common::sandbox::Sandbox::new();
    sb.write(
        "t.yaml",
        &common::sandbox::runbook(
            "timed",
            "timeout: 45m\nsteps:\n  - {id: a, action: wait, with: {for: 1s}}\n",
        ),
    );
    let text = sb.lifeboat(&["plan", "t.yaml"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout
            .contains("Timeout:    45m for each run or resume, then running steps are cancelled"),
        "{}",
        text.stdout
    );
    let json = sb.lifeboat(&["plan", "t.yaml", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(plan["timeout"], "45m");
}

/// A list param is given comma-separated or as JSON, checked item by item, and seen by
/// templates as a list.
#[test]
fn list_params_from_the_command_line() {
    let sb = common::sandbox::Sandbox::new();
    sb.write(
        "l.yaml",
        &common::sandbox::runbook(
            "lists",
            "params:\n  dbs: {type: array, items: string, enum: [orders, users, \"a,b\"]}\n  ports: {type: array, items: integer, default: []}\nsteps:\n  - {id: a, action: shell, with: {argv: [echo, \"{{ params.dbs | join('|') }} {{ params.ports | sum }}\"]}}\n",
        ),
    );
    let r = sb.lifeboat(&[
        "run",
        "l.yaml",
        "-p",
        "dbs=orders, users",
        "-p",
        "ports=1,2",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.outputs(&r.run_id(), "a")["stdout"], "orders|users 3\n");
    let r = sb.lifeboat(&["run", "l.yaml", "-p", r#"dbs=["a,b"]"#]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.outputs(&r.run_id(), "a")["stdout"], "a,b 0\n");
    let bad = sb.lifeboat(&["run", "l.yaml", "-p", "dbs=orders,userz", "-p", "ports=1,x"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr
            .contains("`userz` is not one of orders, users, a,b")
            && bad.stderr.contains("did you mean `users`?")
            && bad.stderr.contains("-p ports=1,x: `x` is not an integer"),
        "{}",
        bad.stderr
    );
}

#[test]
fn schema_actions_explain() {
    let (code, stdout, _) = lifeboat(&["schema"]);
    assert_eq!(code, 0);
    let s: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(s, lifeboat::runbook::schema::generate());

    let (code, stdout, _) = lifeboat(&["actions"]);
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), lifeboat::actions::NAMES.len());
    let (code, stdout, _) = lifeboat(&["actions", "postgres.query"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("sql  (string, required)"), "{stdout}");
    assert!(stdout.contains("rows"));
    let (code, _, stderr) = lifeboat(&["actions", "postgres.qery"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("did you mean `postgres.query`?"));

    let (code, stdout, _) = lifeboat(&["explain", "lb0103"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("# LB0103"));
    let (code, _, _) = lifeboat(&["explain", "LB9999"]);
    assert_eq!(code, 2);
}

#[test]
fn usage_errors_exit_2() {
    let (code, _, _) = lifeboat(&["frobnicate"]);
    assert_eq!(code, 2);
    let (code, stdout, _) = lifeboat(&["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("lifeboat "));
}

/// `lifeboat diff`: a changed destructive step is called out first, a procedure changed
/// without a version bump exits 1, and markdown is ready for a pull-request comment.
#[test]
fn diff_calls_out_what_matters_and_refuses_a_change_without_a_version_bump() {
    let sb = common::sandbox::Sandbox::new();
    let old = r#"apiVersion: lifeboat/v1
kind: Runbook
metadata: {name: t, version: "1.0.0"}
connections:
  db: {postgres: {url: "postgres://x@127.0.0.1/a"}}
steps:
  - {id: stop, action: shell, with: {argv: [stop]}}
  - {id: purge, action: postgres.query, needs: [stop], with: {connection: db, sql: "delete from t", writes: true}}
"#;
    sb.write("old.yaml", old);
    sb.write(
        "new.yaml",
        &old.replace("delete from t", "delete from t where done"),
    );
    let r = sb.lifeboat(&["diff", "old.yaml", "new.yaml"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("still 1.0.0"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("! destructive step `purge` (postgres.query) changed: with.sql"),
        "{}",
        r.stdout
    );
    sb.write(
        "new.yaml",
        &old.replace("delete from t", "delete from t where done")
            .replace("1.0.0", "1.1.0"),
    );
    let r = sb.lifeboat(&["diff", "old.yaml", "new.yaml", "--format", "markdown"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("| changed | `purge` **destructive** | `postgres.query` | `with.sql`: delete from t → delete from t where done |"),
        "{}",
        r.stdout
    );
    let missing = sb.lifeboat(&["diff", "nowhere.yaml", "new.yaml"]);
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("neither a file nor REV:PATH"),
        "{}",
        missing.stderr
    );
}

/// `lifeboat completions SHELL` gives a script each shell loads without an error and that
/// completes the subcommands; `lifeboat man` a page groff formats without a warning.
#[test]
fn completions_load_in_their_shells_and_the_man_page_formats() {
    let sb = common::sandbox::Sandbox::new();
    for (shell, check) in [
        ("bash", vec!["bash", "-n"]),
        ("zsh", vec!["zsh", "-n"]),
        ("fish", vec!["fish", "--no-execute"]),
    ] {
        let r = sb.lifeboat(&["completions", shell]);
        assert_eq!(r.code, 0, "{shell}: {}", r.stderr);
        for sub in ["diff", "abort", "resume", "drill"] {
            assert!(r.stdout.contains(sub), "{shell} completes no `{sub}`");
        }
        let file = sb.write(&format!("lifeboat.{shell}"), &r.stdout);
        let out = Command::new(check[0])
            .args(&check[1..])
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("{shell} is installed (scripts/setup-test-env): {e}"));
        assert!(
            out.status.success(),
            "{shell} refuses its completions: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let man = sb.lifeboat(&["man"]);
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(
        man.stdout.starts_with(".ie \\n(.g"),
        "{}",
        &man.stdout[..80]
    );
    let page = sb.write("lifeboat.1", &man.stdout);
    let out = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
        .expect("groff is installed (scripts/setup-test-env)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "groff: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = Command::new("groff")
        .args(["-man", "-Tutf8"])
        .arg(&page)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("lifeboat-abort(1)"), "{text}");
    // The pages it refers to, one per command, each formatting cleanly.
    let dir = sb.path("man1");
    std::fs::create_dir_all(&dir).unwrap();
    let r = sb.lifeboat(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for page in [
        "lifeboat.1",
        "lifeboat-abort.1",
        "lifeboat-diff.1",
        "lifeboat-run.1",
    ] {
        let out = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(dir.join(page))
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The README's install, as a user runs it (into a root of its own, and in the debug profile
/// this suite already built, so it links rather than compiles for ten minutes): the installed
/// binary validates the shipped runbooks and prints its completions.
#[test]
fn cargo_install_puts_a_working_lifeboat_on_the_path() {
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO"))
        .args(["install", "--locked", "--debug", "--quiet", "--path"])
        .arg(common::root())
        .arg("--root")
        .arg(root.path())
        // The suite's own build: the install reuses what it compiled.
        .env(
            "CARGO_TARGET_DIR",
            std::env::var("CARGO_TARGET_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|_| common::root().join("target")),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = root.path().join("bin/lifeboat");
    let v = Command::new(&installed)
        .args(["validate", "runbooks/"])
        .current_dir(common::root())
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    assert!(String::from_utf8_lossy(&v.stderr).contains("runbook(s) valid"));
    let c = Command::new(&installed)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&c.stdout).contains("_lifeboat()"));
}
