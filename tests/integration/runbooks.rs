//! Every runbook shipped in runbooks/ and examples/ validates and plans, and its plan is snapshotted
//! so a change in what a procedure would do shows up in review.

use crate::common;

use lifeboat::{plan, runbook};

/// Params a shipped runbook needs that have no default.
fn params_for(name: &str) -> Vec<(String, String)> {
    match name {
        "region-failover.yaml" => vec![("dr_address".into(), "192.0.2.10".into())],
        _ => vec![],
    }
}

#[test]
fn shipped_runbooks_validate_and_plan() {
    let root = common::root();
    let mut files = common::yaml_files(&root.join("runbooks"));
    let examples: Vec<_> = common::yaml_files(&root.join("examples"))
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .contains("apiVersion: lifeboat/")
        })
        .collect();
    files.extend(examples);
    assert!(
        files.len() >= 5,
        "runbooks and examples are missing: {files:?}"
    );
    std::env::set_current_dir(&root).unwrap();
    for path in files {
        let rel = path.strip_prefix(&root).unwrap();
        let loaded = runbook::load_file(rel);
        let rb = match loaded.result {
            Ok(rb) => rb,
            Err(_) => panic!("{} is invalid:\n{}", rel.display(), common::rendered(&path)),
        };
        // What ships is what runbook authors copy: it pastes no value into code unquoted.
        assert!(
            rb.warnings.is_empty(),
            "{} has warnings: {:?}",
            rel.display(),
            rb.warnings.iter().map(|w| &w.message).collect::<Vec<_>>()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema="),
            "{} lacks the schema modeline",
            rel.display()
        );
        let name = path.file_name().unwrap().to_str().unwrap();
        let values =
            runbook::params::resolve(&rb, &params_for(name), true).expect("params resolve");
        let plan = plan::build(&rb, &values)
            .unwrap_or_else(|d| panic!("{}: plan failed: {d:?}", rel.display()));
        let snap = rel.display().to_string().replace(['/', '.'], "_");
        insta::assert_snapshot!(format!("{snap}_text"), plan::render_text(&plan));
        insta::assert_snapshot!(format!("{snap}_mermaid"), plan::render_mermaid(&plan));
        let json: serde_json::Value = serde_json::from_str(&plan::render_json(&plan)).unwrap();
        assert_eq!(json["format_version"], 1);
        // One planned step per step, `for_each` made into a step per item.
        let expanded = runbook::expand(&rb, &values).unwrap();
        assert_eq!(
            json["steps"].as_array().unwrap().len(),
            expanded.steps.len()
        );
        let dot = plan::render_dot(&plan);
        assert!(dot.starts_with("digraph") && dot.trim_end().ends_with('}'));
        // Each drill scenario plans too, as `lifeboat drill` would run it.
        for name in rb.drill.iter().flat_map(|d| d.scenarios.keys()) {
            let composed = lifeboat::drill::compose(&rb, name).unwrap();
            let mut plan = plan::build(&composed.runbook, &values).unwrap_or_else(|d| {
                panic!("{}: scenario {name}: plan failed: {d:?}", rel.display())
            });
            plan.scenario = Some(name.clone());
            insta::assert_snapshot!(format!("{snap}_drill_{name}"), plan::render_text(&plan));
        }
    }
    let scenarios: usize = common::yaml_files(&root.join("runbooks"))
        .iter()
        .filter_map(|p| runbook::load_file(p).result.ok())
        .filter_map(|rb| rb.drill.map(|d| d.scenarios.len()))
        .sum();
    assert!(scenarios >= 4, "the four drill scenarios ship in runbooks/");
}

#[test]
#[allow(unsafe_code)]
fn plans_never_contain_secret_values() {
    // Secrets are never read by plan: even with the variable set, only *** appears.
    let root = common::root();
    std::env::set_current_dir(&root).unwrap();
    // SAFETY: no other thread of this test binary reads the environment.
    unsafe { std::env::set_var("PGPASSWORD", "hunter2-should-not-leak") };
    let loaded = runbook::load_file(std::path::Path::new("runbooks/postgres-restore.yaml"));
    let rb = loaded.result.unwrap();
    let values = runbook::params::resolve(&rb, &[], true).unwrap();
    let plan = plan::build(&rb, &values).unwrap();
    for out in [
        plan::render_text(&plan),
        plan::render_json(&plan),
        plan::render_mermaid(&plan),
        plan::render_dot(&plan),
    ] {
        assert!(!out.contains("hunter2"), "a secret leaked into the plan");
    }
    assert!(plan::render_text(&plan).contains("decrypt_with: ***"));
}

#[test]
fn when_false_for_the_params_skips_the_step_and_its_dependents() {
    let root = common::root();
    let loaded = runbook::load_file(&root.join("examples/orders-db-restore.yaml"));
    let rb = loaded.result.unwrap();
    let us = plan::build(&rb, &runbook::params::resolve(&rb, &[], true).unwrap()).unwrap();
    let dns = us.steps.iter().find(|s| s.id == "failover_dns").unwrap();
    assert_eq!(dns.status, plan::StepStatus::Skipped);
    let eu_params = vec![("region".to_string(), "eu-west-1".to_string())];
    let eu = plan::build(
        &rb,
        &runbook::params::resolve(&rb, &eu_params, true).unwrap(),
    )
    .unwrap();
    let dns = eu.steps.iter().find(|s| s.id == "failover_dns").unwrap();
    assert_eq!(dns.status, plan::StepStatus::Runs);
    assert!(dns.destructive);
}

/// What each shipped runbook's last change did to its procedure, as `lifeboat diff` shows it to
/// a reviewer: the runbook at the commit before the one that last changed it, against the file
/// now (a previous version that today's lifeboat refuses is shown refused). Needs the git
/// history (`.ci/run` runs in a clone).
#[test]
fn each_shipped_runbooks_last_change_is_diffed_as_a_reviewer_sees_it() {
    let root = common::root();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .expect("git is installed (scripts/setup-test-env)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    // A shallow clone has no earlier versions to compare with; `.ci/run` deepens one first.
    if git(&["rev-parse", "--is-shallow-repository"]).1 == "true" {
        panic!(
            "the clone is shallow: `git fetch --unshallow` (as .ci/run does), then run the tests"
        );
    }
    let mut diffed = 0;
    for path in common::yaml_files(&root.join("runbooks")) {
        let rel = path.strip_prefix(&root).unwrap().display().to_string();
        let (ok, last) = git(&["log", "-1", "--format=%h", "--", &rel]);
        assert!(
            ok && !last.is_empty(),
            "{rel} has no git history: run the tests in a clone"
        );
        let before = format!("{last}~1:{rel}");
        if !git(&["cat-file", "-e", &before]).0 {
            continue; // the commit that last changed it created it
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(["diff", &before, &rel])
            .current_dir(&root)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let shown = format!(
            "$ lifeboat diff PREVIOUS:{rel} {rel}\nexit {}\n{}{}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).replace(&format!("{last}~1"), "PREVIOUS")
        );
        // A procedure changed without a version bump would not have been merged.
        assert!(!shown.contains("is still"), "{shown}");
        let snap = rel.replace(['/', '.'], "_");
        insta::assert_snapshot!(format!("diff_{snap}"), shown);
        diffed += 1;
    }
    assert!(
        diffed >= 5,
        "only {diffed} shipped runbooks have a previous version"
    );
}
