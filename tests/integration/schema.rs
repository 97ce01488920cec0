//! The committed JSON Schema is the generated one, and it accepts every shipped runbook.

use crate::common;

#[test]
fn committed_schema_is_current() {
    let path = common::root().join(lifeboat::runbook::schema::SCHEMA_FILE);
    let committed: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).expect("schemas/runbook.v1.json exists"),
    )
    .unwrap();
    let generated = lifeboat::runbook::schema::generate();
    assert!(
        committed == generated,
        "schemas/runbook.v1.json is stale; regenerate it with\n    cargo run -q -- schema > schemas/runbook.v1.json"
    );
}

#[test]
fn committed_schema_accepts_shipped_runbooks_and_rejects_typos() {
    let path = common::root().join(lifeboat::runbook::schema::SCHEMA_FILE);
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for f in common::yaml_files(&common::root().join("runbooks")) {
        let doc: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", f.display());
    }
    let doc = serde_json::json!({
        "apiVersion": "lifeboat/v1", "kind": "Runbook", "metadata": {"name": "x", "version": "1.0.0"},
        "steps": [{"id": "q", "action": "postgres.query", "with": {"connection": "db", "sql": "x", "sqll": 1}}]
    });
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| e.instance_path().to_string())
        .collect();
    assert_eq!(
        errors,
        vec!["/steps/0/with"],
        "the per-action `with` schema is applied"
    );
}

/// The committed schema, checked by an independent validator (ajv, strict, JSON Schema
/// 2020-12) as editors check it: every shipped runbook and example is valid, and every invalid
/// fixture lifeboat refuses for its shape (LB001x) ajv refuses too.
#[test]
fn an_independent_validator_agrees_with_lifeboat_on_the_schema() {
    let root = common::root();
    let env_dir = std::env::var("LIFEBOAT_TESTENV")
        .unwrap_or_else(|_| format!("{}/.cache/lifeboat-testenv", std::env::var("HOME").unwrap()));
    let ajv = std::path::PathBuf::from(env_dir).join("ajv/node_modules/.bin/ajv");
    assert!(ajv.exists(), "scripts/setup-test-env installs ajv");
    let check = |files: &[std::path::PathBuf]| {
        let mut c = std::process::Command::new(&ajv);
        c.args(["validate", "--spec=draft2020", "--all-errors"])
            .arg("-c")
            .arg(root.join("scripts/ajv-formats.cjs"))
            .arg("-s")
            .arg(root.join("schemas/runbook.v1.json"));
        for f in files {
            c.arg("-d").arg(f);
        }
        let out = c.current_dir(&root).output().expect("node runs ajv");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            !text.contains("strict mode") && !text.contains("runbook.v1.json is invalid"),
            "ajv refuses the schema itself: {text}"
        );
        text
    };
    let mut shipped = common::yaml_files(&root.join("runbooks"));
    shipped.extend(
        common::yaml_files(&root.join("examples"))
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .contains("apiVersion: lifeboat/")
            }),
    );
    assert!(shipped.len() >= 10);
    let text = check(&shipped);
    for f in &shipped {
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        assert!(
            text.contains(&format!("{} valid", f.display())),
            "ajv does not find {rel} valid:\n{text}"
        );
    }
    let mut refused = 0;
    for f in common::yaml_files(&root.join("tests/fixtures/invalid")) {
        let shape = common::rendered(&f)
            .lines()
            .any(|l| l.contains(": error[LB001") && !l.contains("error[LB0013]"));
        if !shape {
            continue;
        }
        let text = check(std::slice::from_ref(&f));
        assert!(
            text.contains(&format!("{} invalid", f.display())),
            "lifeboat refuses the shape of {} and ajv does not:\n{text}",
            f.display()
        );
        refused += 1;
    }
    assert!(
        refused >= 3,
        "only {refused} fixtures are refused for their shape"
    );
}
