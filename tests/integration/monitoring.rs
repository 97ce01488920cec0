//! What teams alert on: examples/monitoring's rules checked and unit-tested by Prometheus's own
//! promtool, `lifeboat metrics` checked by it, and the rules and the Grafana dashboard reading
//! only metrics lifeboat writes.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use crate::common;
use common::sandbox::{Sandbox, runbook};

fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut c = Command::new("promtool");
    c.args(args)
        .current_dir(common::root().join("examples/monitoring"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .expect("promtool is installed (Debian's prometheus, scripts/setup-test-env)");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Every `lifeboat_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("lifeboat_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.insert(name);
    }
    out
}

#[test]
fn the_alert_rules_pass_promtool_and_fire_at_each_runbooks_cadence() {
    let (ok, out) = promtool(&["check", "rules", "lifeboat.rules.yml"], None);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["test", "rules", "lifeboat.rules.test.yml"], None);
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

#[test]
fn lifeboat_metrics_passes_promtool_and_the_rules_and_dashboard_read_only_what_it_writes() {
    let sb = Sandbox::new();
    sb.write(
        "ok.yaml",
        &runbook(
            "nightly",
            "steps:\n  - {id: a, action: shell, with: {argv: ['true']}}\n",
        ),
    );
    sb.write(
        "bad.yaml",
        &runbook(
            "broken",
            "steps:\n  - {id: a, action: shell, with: {argv: ['false']}}\n",
        ),
    );
    assert_eq!(sb.lifeboat(&["run", "ok.yaml"]).code, 0);
    assert_eq!(sb.lifeboat(&["run", "bad.yaml"]).code, 1);
    let m = sb.lifeboat(&["metrics"]);
    assert_eq!(m.code, 0, "{}", m.stderr);
    assert!(
        m.stdout
            .contains("lifeboat_last_success_duration_seconds{runbook=\"nightly\"}"),
        "{}",
        m.stdout
    );
    let (ok, out) = promtool(&["check", "metrics"], Some(&m.stdout));
    assert!(ok && out.trim().is_empty(), "promtool check metrics: {out}");

    // The names lifeboat can write: every metric family in src/metrics.rs.
    let source = std::fs::read_to_string(common::root().join("src/metrics.rs")).unwrap();
    let written: BTreeSet<String> = metric_names(&source);
    let dir = common::root().join("examples/monitoring");
    for file in ["lifeboat.rules.yml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let read = metric_names(&text);
        assert!(read.len() >= 5, "{file} reads {read:?}");
        let unknown: Vec<&String> = read.difference(&written).collect();
        assert!(
            unknown.is_empty(),
            "{file} reads metrics lifeboat never writes: {unknown:?}"
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap())
            .unwrap();
    for p in dashboard["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            // Each query parses as PromQL: promtool reads it as a rule's expression.
            let rule = format!(
                "groups:\n  - name: dashboard\n    rules:\n      - record: dashboard:check\n        expr: {}\n",
                serde_json::to_string(expr).unwrap()
            );
            let file = sb.write("panel.rules.yml", &rule);
            let (ok, out) = promtool(&["check", "rules", file.to_str().unwrap()], None);
            assert!(ok, "panel {}: {expr}: {out}", p["title"]);
        }
    }
}
