//! Hostile input: each case ends in a clear error with the right code, in bounded time and memory,
//! never a panic or a hang. (No timing assertions: the machines are shared; a hang fails by timeout.)

use lifeboat::diagnostics::Code;
use lifeboat::runbook::load_file;

fn codes_for(bytes: &[u8]) -> Vec<Code> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.yaml");
    std::fs::write(&path, bytes).unwrap();
    let loaded = load_file(&path);
    let diags = loaded.result.expect_err("hostile input must be rejected");
    for d in &diags {
        // Rendering must not panic either, wherever the error points.
        let _ = lifeboat::diagnostics::render(&loaded.source, d, false);
    }
    diags.iter().map(|d| d.code).collect()
}

#[test]
fn a_20_mb_file_is_refused_before_parsing() {
    let big = "# padding\n".repeat(2 * 1024 * 1024);
    assert_eq!(codes_for(big.as_bytes()), vec![Code::InputLimit]);
}

#[test]
fn billion_laughs_is_stopped() {
    let mut s = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for c in b'b'..=b'j' {
        let p = (c - 1) as char;
        let c = c as char;
        s.push_str(&format!(
            "{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
        ));
    }
    assert_eq!(codes_for(s.as_bytes()), vec![Code::InputLimit]);
}

#[test]
fn deep_nesting_is_stopped() {
    let flow = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(codes_for(flow.as_bytes()), vec![Code::InputLimit]);
    let block: String = (0..10_000)
        .map(|i| format!("{}a:\n", " ".repeat(i % 2000)))
        .collect();
    let codes = codes_for(block.as_bytes());
    assert_eq!(codes.len(), 1);
    let deep_map = format!("{}1{}", "{a: ".repeat(10_000), "}".repeat(10_000));
    assert_eq!(codes_for(deep_map.as_bytes()), vec![Code::InputLimit]);
}

#[test]
fn binary_junk_is_not_text() {
    let mut junk: Vec<u8> = b"apiVersion: lifeboat/v1\n".to_vec();
    junk.extend((0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 0x80));
    assert_eq!(codes_for(&junk), vec![Code::NotText]);
    // Valid UTF-8 control characters are a YAML error, not a crash.
    let codes = codes_for(b"\x00\x01\x02: \x07\x1b[31m");
    assert_eq!(codes.len(), 1);
}

#[test]
fn empty_and_comment_only_files() {
    assert_eq!(codes_for(b""), vec![Code::NotOneDocument]);
    assert_eq!(codes_for(b"   \n\n"), vec![Code::NotOneDocument]);
    assert_eq!(codes_for(b"# nothing here\n"), vec![Code::NotOneDocument]);
    assert_eq!(codes_for(b"~\n"), vec![Code::NotOneDocument]);
}

#[test]
fn several_documents_are_refused() {
    assert_eq!(
        codes_for(b"a: 1\n---\nb: 2\n---\nc: 3\n"),
        vec![Code::NotOneDocument]
    );
}

#[test]
fn wrong_shapes_at_the_top() {
    for doc in [
        &b"[1, 2, 3]"[..],
        b"just a string",
        b"42",
        b"true",
        b"{apiVersion: lifeboat/v1}",
    ] {
        let codes = codes_for(doc);
        assert!(!codes.is_empty(), "{}", String::from_utf8_lossy(doc));
    }
}

#[test]
fn many_steps_and_long_strings_are_fine() {
    // Large but legitimate input is accepted: the limits are far from real runbooks.
    let mut s = String::from(
        "apiVersion: lifeboat/v1\nkind: Runbook\nmetadata: {name: big, version: 1.0.0}\nsteps:\n",
    );
    for i in 0..3000 {
        s.push_str(&format!(
            "  - {{id: s{i}, action: wait, with: {{for: 1s}}{}}}\n",
            if i > 0 {
                format!(", needs: [s{}]", i - 1)
            } else {
                String::new()
            }
        ));
    }
    s.push_str(&format!(
        "  - {{id: long, action: wait, with: {{for: 1s}}, description: \"{}\"}}\n",
        "x".repeat(1_000_000)
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    std::fs::write(&path, s).unwrap();
    let rb = load_file(&path).result.expect("valid");
    assert_eq!(rb.steps.len(), 3001);
}

use crate::common;
use common::sandbox::{Sandbox, runbook};

/// A runbook whose second step renders `template`; its first step leaves a mark when it runs.
fn with_template(template: &str) -> String {
    runbook(
        "agree",
        &format!(
            r#"params:
  x: {{type: string, default: "abc"}}
  n: {{type: integer, default: 2}}
steps:
  - {{id: first, action: shell, with: {{script: "touch ran"}}}}
  - id: second
    action: shell
    needs: [first]
    with: {{argv: [echo, {}]}}
"#,
            serde_json::to_string(template).unwrap()
        ),
    )
}

/// `validate`, `plan` and `run` agree on every template: what can never render is refused by
/// all three (and `run` refuses before any step has run), and what can render passes all three.
#[test]
fn validate_plan_and_run_agree_on_templates() {
    let never = [
        "{{ params.x | no_such_filter }}",
        "{{ params.x is no_such_test }}",
        "{{ no_such_function() }}",
        "{% include 'other.j2' %}",
        "{% import 'macros.j2' as m %}{{ m.x }}",
        "{% extends 'base.j2' %}",
        "{% from 'm.j2' import x %}",
        "{{ 1 / 0 }}",
        "{{ params.n // 0 }}",
        "{{ params.n % 0 }}",
        "{{ params.n / 0.0 }}",
        "{{ steps.first.outputs.exit_code | nope }}",
    ];
    for t in never {
        let sb = Sandbox::new();
        sb.write("r.yaml", &with_template(t));
        let v = sb.lifeboat(&["validate", "r.yaml"]);
        assert_eq!(v.code, 2, "validate {t}: {}", v.stderr);
        assert!(
            v.stderr.contains("error[LB0126]"),
            "validate {t}: {}",
            v.stderr
        );
        let p = sb.lifeboat(&["plan", "r.yaml"]);
        assert_eq!(p.code, 2, "plan {t}: {}", p.stderr);
        let r = sb.lifeboat(&["run", "r.yaml", "--yes"]);
        assert_eq!(r.code, 2, "run {t}: {}", r.stderr);
        assert!(!sb.path("ran").exists(), "run {t}: a step ran first");
    }
    // (A whole `{{ expression }}` keeps its type: one yielding a number or a boolean where the
    // action wants text is refused by all three alike when its values are known, and by the
    // attempt, before the action runs, when only the run knows them.)
    let typed = ["{{ params.x is defined }}", "{{ params.n + 1 }}"];
    for t in typed {
        let sb = Sandbox::new();
        sb.write("r.yaml", &with_template(t));
        let codes = [
            sb.lifeboat(&["validate", "r.yaml"]).code,
            sb.lifeboat(&["plan", "r.yaml"]).code,
            sb.lifeboat(&["run", "r.yaml", "--yes"]).code,
        ];
        assert_eq!(codes, [2, 2, 2], "{t}");
        assert!(!sb.path("ran").exists(), "run {t}: a step ran first");
    }
    let fine = [
        "{{ params.x | upper }}",
        "{{ steps.first.outputs.stdout | trim }}",
        "n={{ steps.first.outputs.exit_code + 1 }}",
        "n={{ (steps.first.outputs.stdout | length) / params.n }}",
        "{{ range(3) | join(',') }}",
        "defined: {{ params.x is defined }}",
        "{{ dict(a=1) | tojson }}",
        "{% for i in range(params.n) %}{{ loop.index }}{% endfor %}",
        "{% macro m(v) %}<{{ v }}>{% endmacro %}{{ m(params.x) }}",
        "half={{ params.n / 2 }}",
    ];
    for t in fine {
        let sb = Sandbox::new();
        sb.write("r.yaml", &with_template(t));
        let v = sb.lifeboat(&["validate", "r.yaml"]);
        assert_eq!(v.code, 0, "validate {t}: {}", v.stderr);
        let p = sb.lifeboat(&["plan", "r.yaml"]);
        assert_eq!(p.code, 0, "plan {t}: {}", p.stderr);
        let r = sb.lifeboat(&["run", "r.yaml", "--yes"]);
        assert_eq!(r.code, 0, "run {t}: {}", r.stderr);
    }
    // With params: what fails for these values fails in all three alike.
    let sb = Sandbox::new();
    sb.write("r.yaml", &with_template("{{ params.x + 1 }}"));
    let v = sb.lifeboat(&["validate", "r.yaml", "-p", "x=text"]);
    let p = sb.lifeboat(&["plan", "r.yaml", "-p", "x=text"]);
    let r = sb.lifeboat(&["run", "r.yaml", "-p", "x=text"]);
    assert_eq!(
        (v.code, p.code, r.code),
        (2, 2, 2),
        "{}\n{}\n{}",
        v.stderr,
        p.stderr,
        r.stderr
    );
    assert!(!sb.path("ran").exists());
}
