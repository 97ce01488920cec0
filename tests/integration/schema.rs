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
