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
