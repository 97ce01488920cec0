//! Values pasted into code: validation warns where a param, an output or an environment value
//! flows unquoted into a script or SQL, the quoting filters keep values values, the text plan
//! shows a destructive step whole, and names and keys are checked for their grammar, at
//! validation where literal and before the action runs otherwise.

use crate::common;

use common::sandbox::{Sandbox, runbook};

const HOSTILE: &[&str] = &[
    "'; touch pwned #",
    "$(touch pwned)",
    "`touch pwned`",
    "x\ntouch pwned",
    "a && touch pwned",
    "\"; touch pwned; echo \"",
    "${IFS}touch${IFS}pwned",
];

fn warnings(sb: &Sandbox) -> (i32, usize, String) {
    let v = sb.lifeboat(&["validate", "r.yaml"]);
    (
        v.code,
        v.stderr.matches("warning[LB0127]").count(),
        v.stderr,
    )
}

#[test]
fn values_pasted_into_scripts_and_sql_are_warned_with_the_safe_form() {
    let cases: &[(&str, usize)] = &[
        (
            r#"{id: s, action: shell, with: {script: "pg_dump {{ params.db }}"}}"#,
            1,
        ),
        (
            r#"{id: s, action: shell, with: {script: "echo {{ params.db }} {{ env.HOME }} {{ secrets.pw }}"}}"#,
            3,
        ),
        (
            r#"{id: s, action: shell, with: {argv: [bash, -c, "rm -rf /data/{{ params.db }}"]}}"#,
            1,
        ),
        (
            r#"{id: s, action: shell, with: {argv: [/bin/sh, -ec, "echo {{ params.db | trim }}"]}}"#,
            1,
        ),
        (
            r#"{id: s, action: postgres.query, with: {connection: pg, sql: "drop database {{ params.db }}", writes: true}}"#,
            1,
        ),
        (
            r#"{id: s, action: backup.verify, with: {connection: pg, from: {connection: s3, key: b}, queries: ["select '{{ params.db }}'"]}}"#,
            1,
        ),
        // The safe forms.
        (
            r#"{id: s, action: shell, with: {script: "pg_dump {{ params.db | shell_quote }}"}}"#,
            0,
        ),
        (
            r#"{id: s, action: shell, with: {argv: [pg_dump, "{{ params.db }}"]}}"#,
            0,
        ),
        (
            r#"{id: s, action: shell, with: {script: 'pg_dump "$DB"', env: {DB: "{{ params.db }}"}}}"#,
            0,
        ),
        (
            r#"{id: s, action: shell, with: {script: "sleep {{ params.n }}; deploy {{ params.region }}"}}"#,
            0,
        ),
        (
            r#"{id: s, action: postgres.query, with: {connection: pg, sql: "select $1", params: ["{{ params.db }}"]}}"#,
            0,
        ),
        (
            r#"{id: s, action: postgres.query, with: {connection: pg, sql: "drop database {{ params.db | sql_ident }}", writes: true}}"#,
            0,
        ),
        (
            r#"{id: s, action: postgres.query, with: {connection: pg, sql: "select {{ params.db | sql_literal }}"}}"#,
            0,
        ),
    ];
    for (step, expected) in cases {
        let sb = Sandbox::new();
        sb.write(
            "r.yaml",
            &runbook(
                "inject",
                &format!(
                    "params:\n  db: {{type: string, default: orders}}\n  n: {{type: integer, default: 1}}\n  region: {{type: string, default: eu, enum: [eu, us]}}\nsecrets:\n  pw: {{env: LB_PW}}\nconnections:\n  pg: {{postgres: {{url: \"postgres://x@127.0.0.1/db\"}}}}\n  s3: {{s3: {{bucket: b}}}}\nsteps:\n  - {step}\n"
                ),
            ),
        );
        let (code, n, stderr) = warnings(&sb);
        assert_eq!(
            code, 0,
            "{step}: warnings do not make a runbook invalid: {stderr}"
        );
        assert_eq!(n, *expected, "{step}: {stderr}");
        if n > 0 {
            assert!(
                stderr.contains("shell_quote") || stderr.contains("bind parameter"),
                "{step}: the safe form is in the help: {stderr}"
            );
        }
    }
}

/// What `shell_quote` quotes is one word to the shell, whatever it holds; and the plan warns
/// about the form that does not quote.
#[test]
fn a_quoted_param_stays_a_value() {
    for value in HOSTILE {
        let sb = Sandbox::new();
        sb.write(
            "r.yaml",
            &runbook(
                "quoted",
                "params:\n  name: {type: string}\nsteps:\n  - {id: s, action: shell, with: {script: \"printf '%s' {{ params.name | shell_quote }} > out.txt\"}}\n",
            ),
        );
        let r = sb.lifeboat(&["run", "r.yaml", "-p", &format!("name={value}")]);
        assert_eq!(r.code, 0, "{value:?}: {}", r.stderr);
        assert_eq!(sb.read("out.txt"), *value);
        assert!(!sb.path("pwned").exists(), "{value:?} ran");
    }
}

#[test]
fn the_text_plan_shows_a_destructive_step_whole() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "whole",
            "steps:\n  - id: wipe\n    action: shell\n    with:\n      script: |\n        echo one\n        rm -rf /srv/old\n        echo three\n",
        ),
    );
    let plan = sb.lifeboat(&["plan", "r.yaml"]).stdout;
    assert!(plan.contains("[DESTRUCTIVE]"), "{plan}");
    for line in ["echo one", "rm -rf /srv/old", "echo three"] {
        assert!(
            plan.contains(&format!("          {line}\n")),
            "{line}: {plan}"
        );
    }
}

/// Names and keys are checked for their grammar: literal ones when the runbook is validated,
/// ones a param makes when it is planned (and before a run starts), ones only the run knows
/// before the action touches anything.
#[test]
fn kubernetes_names_and_s3_keys_are_checked_for_their_grammar() {
    let head = "params:\n  p: {type: string, default: ok}\nconnections:\n  k: {kubernetes: {context: none}}\n  b: {s3: {bucket: b, endpoint: \"http://127.0.0.1:9\", access_key_id: x, secret_access_key: y}}\nsteps:\n  - {id: first, action: shell, with: {argv: [printf, \"../escape\"]}}\n";
    let literal = [
        r#"{id: s, action: kubernetes.scale, with: {connection: k, deployment: Orders_DB, replicas: 1}}"#,
        r#"{id: s, action: kubernetes.scale, with: {connection: k, deployment: orders, namespace: "a.b", replicas: 1}}"#,
        r#"{id: s, action: kubernetes.delete, with: {connection: k, kind: ConfigMap, name: "-bad-"}}"#,
        r#"{id: s, action: kubernetes.wait_ready, with: {connection: k, statefulset: "x/y"}}"#,
        r#"{id: s, action: s3.put, with: {connection: b, key: "backups/../../etc/passwd", content: x}}"#,
        r#"{id: s, action: s3.get, with: {connection: b, key: "/abs", to: out}}"#,
        r#"{id: s, action: s3.delete, with: {connection: b, keys: [ok, "a/./b"]}}"#,
        r#"{id: s, action: s3.list, with: {connection: b, prefix: "../"}}"#,
        r#"{id: s, action: s3.retention, with: {connection: b, prefix: "x/../", keep_last: 1}}"#,
    ];
    for step in literal {
        let sb = Sandbox::new();
        sb.write(
            "r.yaml",
            &runbook("grammar", &format!("{head}  - {step}\n")),
        );
        let v = sb.lifeboat(&["validate", "r.yaml"]);
        assert_eq!(v.code, 2, "{step}: {}", v.stderr);
        assert!(v.stderr.contains("error[LB0013]"), "{step}: {}", v.stderr);
    }
    // A param that makes a bad key: plan and run refuse it before anything runs.
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "grammar",
            &format!("{head}  - {{id: s, action: s3.put, needs: [first], with: {{connection: b, key: \"backups/{{{{ params.p }}}}/x\", content: x}}}}\n"),
        ),
    );
    assert_eq!(sb.lifeboat(&["plan", "r.yaml"]).code, 0);
    let p = sb.lifeboat(&["plan", "r.yaml", "-p", "p=.."]);
    assert_eq!(p.code, 2, "{}", p.stderr);
    assert!(p.stderr.contains("segment"), "{}", p.stderr);
    let r = sb.lifeboat(&["run", "r.yaml", "-p", "p=.."]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    // A key only the run knows: the attempt fails on it before it reaches the server (which
    // does not exist: reaching it would be a connection error, and transient).
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "grammar",
            &format!("{head}  - {{id: s, action: s3.put, needs: [first], with: {{connection: b, key: \"{{{{ steps.first.outputs.stdout }}}}\", content: x}}, retry: {{attempts: 3, delay: 10ms}}}}\n"),
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let events = sb.events(&r.run_id());
    let failed = events.iter().find(|e| e["event"] == "step_failed").unwrap();
    let failure = failed["error"].as_str().unwrap_or_default();
    assert!(failure.contains("after rendering, `with/key`"), "{failed}");
    assert_eq!(failed["attempt"], 1, "refused at once, not retried");
}
