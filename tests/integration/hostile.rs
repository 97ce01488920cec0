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

#[test]
fn an_error_far_out_on_a_very_long_line_renders_with_its_real_position() {
    let sb = Sandbox::new();
    let pad = "x".repeat(2_000_000);
    sb.write(
        "r.yaml",
        &runbook(
            "long",
            &format!(
                "steps:\n  - {{id: a, action: shell, with: {{argv: [\"{pad}\"]}}, bogus: 1}}\n"
            ),
        ),
    );
    let r = sb.lifeboat(&["validate", "r.yaml"]);
    assert_eq!(r.code, 2, "{}", &r.stderr[..r.stderr.len().min(2000)]);
    assert!(!r.stderr.contains("panicked"));
    let header = r.stderr.lines().next().unwrap();
    assert_eq!(
        header,
        "r.yaml:5:2000048: error[LB0010]: unknown field `bogus` in step `a`"
    );
    assert!(
        r.stderr.contains("╭─[r.yaml:5:2000048]"),
        "{}",
        &r.stderr[..2000]
    );
    assert!(r.stderr.len() < 10_000, "the snippet is clipped, not 2 MB");
}

#[test]
fn thousands_of_problems_are_all_reported() {
    let sb = Sandbox::new();
    let steps: String = (0..5000)
        .map(|i| format!("  - {{id: s{i}, action: nope{i}}}\n"))
        .collect();
    sb.write("r.yaml", &runbook("many", &format!("steps:\n{steps}")));
    let r = sb.lifeboat(&["validate", "r.yaml"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.stderr.matches("error[LB0104]").count(), 5000);
    assert!(
        r.stderr.contains("5000 problem(s)"),
        "{}",
        r.stderr.lines().last().unwrap()
    );
}

/// A reader that goes away (a pager, `| head`) never makes lifeboat panic, and a run whose
/// stdout is gone still runs to the end and records it.
#[test]
fn a_closed_stdout_is_no_panic() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "pipe",
            "steps:\n  - {id: a, action: shell, with: {script: 'touch ran'}}\n",
        ),
    );
    let first = sb.lifeboat(&["run", "r.yaml"]);
    let id = first.run_id();
    let commands: Vec<Vec<&str>> = vec![
        vec!["schema"],
        vec!["actions", "--json"],
        vec!["actions", "shell"],
        vec!["explain", "LB0103"],
        vec!["plan", "r.yaml", "--format", "json"],
        vec!["validate", "r.yaml", "--format", "json"],
        vec!["runs", "--json"],
        vec!["runs"],
        vec!["show", &id],
        vec!["log", &id],
        vec!["log", &id, "--json"],
        vec!["metrics"],
        vec!["run", "r.yaml"],
        vec!["run", "r.yaml", "--json"],
    ];
    for args in commands {
        let child = sb
            .command(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = child;
        drop(child.stdout.take()); // the reader is gone before the first byte
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            matches!(out.status.code(), Some(0) | Some(2)),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
    let runs: serde_json::Value =
        serde_json::from_str(&sb.lifeboat(&["runs", "--json"]).stdout).unwrap();
    let done = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .count();
    assert_eq!(done, 3, "the runs whose stdout was closed ran to the end");
}

/// Control characters and bidirectional overrides in values (from the runbook, a command's
/// output, an error) reach no terminal raw: shown escaped in plans, progress, `show`, `log`.
#[test]
fn control_and_bidi_characters_are_shown_not_obeyed() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "ctl",
            r#"steps:
  - id: a
    action: shell
    description: "clear \e[2J the screen, \u202ereversed"
    with:
      changes: false
      script: |
        printf 'out \033[31mred\033[0m \342\200\256rev\n'
        printf 'err \033]0;title\007\n' >&2
        exit 1
"#,
        ),
    );
    let plan = sb.lifeboat(&["plan", "r.yaml"]);
    let run = sb.lifeboat(&["run", "r.yaml"]);
    let id = run.run_id();
    let show = sb.lifeboat(&["show", &id]);
    let log = sb.lifeboat(&["log", &id]);
    for (what, text) in [
        ("plan", plan.stdout + &plan.stderr),
        ("run", run.stderr),
        ("show", show.stdout),
        ("log", log.stdout),
    ] {
        assert!(!text.contains('\u{1b}'), "{what} holds a raw ESC: {text:?}");
        assert!(
            !text.contains('\u{202e}'),
            "{what} holds a raw override: {text:?}"
        );
        assert!(!text.contains('\u{7}'), "{what} holds a raw BEL: {text:?}");
        assert!(
            text.contains("\\u{1b}") || text.contains("\\u{202e}"),
            "{what} shows them escaped: {text}"
        );
    }
}

#[test]
fn yaml_lifeboat_would_not_read_as_written_is_refused() {
    let cases: &[(&str, Code)] = &[
        (
            "with: {script: !!binary ZWNobyBoaQ==}",
            Code::UnsupportedYaml,
        ),
        ("with: {script: !!str echo}", Code::UnsupportedYaml),
        ("with: !custom {script: echo}", Code::UnsupportedYaml),
        ("with: {argv: !!seq [echo]}", Code::UnsupportedYaml),
        (
            "with: {argv: [echo]}, retry: {attempts: 2, factor: .inf}",
            Code::UnsupportedYaml,
        ),
        (
            "with: {argv: [echo]}, retry: {attempts: 2, factor: -.Inf}",
            Code::UnsupportedYaml,
        ),
        (
            "with: {argv: [echo]}, retry: {attempts: 2, factor: .NaN}",
            Code::UnsupportedYaml,
        ),
        (
            "with: {argv: [echo]}, retry: {attempts: 2, factor: 1e999}",
            Code::UnsupportedYaml,
        ),
        ("with: {script: \"echo \u{202e}x\"}", Code::HiddenText),
        (
            "with: {script: \"echo \u{2066}x\u{2069}\"}",
            Code::HiddenText,
        ),
    ];
    for (with, code) in cases {
        let text = format!(
            "apiVersion: lifeboat/v1\nkind: Runbook\nmetadata: {{name: t, version: 1.0.0}}\nsteps:\n  - {{id: a, action: shell, {with}}}\n"
        );
        assert_eq!(codes_for(text.as_bytes()), vec![*code], "{with}");
    }
    // Quoted, the same texts are strings, and fine.
    let ok = "apiVersion: lifeboat/v1\nkind: Runbook\nmetadata: {name: t, version: 1.0.0}\nsteps:\n  - {id: a, action: shell, with: {argv: [echo, '!!binary', '.inf', '1e999', 'hi!']}}\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok.yaml"), ok).unwrap();
    assert!(load_file(&dir.path().join("ok.yaml")).result.is_ok());
}

/// Templates that would build without bound are stopped at a template's budget, whatever way
/// they grow, in `plan` and in `run` alike; the process goes on.
#[test]
fn template_memory_is_bounded() {
    let growing = [
        r#"{% set a = "x" * 100000000 %}{{ (a ~ a ~ a ~ a ~ a ~ a ~ a ~ a) | length }}"#,
        r#"{% set ns = namespace(s="x") %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}"#,
        r#"{% set ns = namespace(l=[1]) %}{% for i in range(60) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | length }}"#,
        r#"{% set ns = namespace(s="xx") %}{% for i in range(40) %}{% set ns.s = ns.s | replace("x", "xx") %}{% endfor %}{{ ns.s | length }}"#,
        r#"{% for i in range(100000) %}{{ "x" * 10000 }}{% endfor %}"#,
        r#"{{ (range(100000) | join(",")) * 900 }}"#,
        r#"{% macro grow(s, n) %}{% if n > 0 %}{{ grow(s ~ s, n - 1) }}{% else %}{{ s | length }}{% endif %}{% endmacro %}{{ grow("x", 40) }}"#,
    ];
    for t in growing {
        let sb = Sandbox::new();
        sb.write("r.yaml", &with_template(t));
        let p = sb.lifeboat(&["plan", "r.yaml"]);
        assert_eq!(p.code, 2, "plan {t}: {}", p.stderr);
        assert!(
            p.stderr.contains("a template's budget")
                || p.stderr.contains("too large")
                || p.stderr.contains("fuel"),
            "plan {t}: {}",
            p.stderr
        );
    }
    // Growing from a value only the run has: the plan defers it, the attempt is stopped.
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &with_template(
            r#"{% set ns = namespace(s=steps.first.outputs.stdout ~ "x") %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}"#,
        ),
    );
    let p = sb.lifeboat(&["plan", "r.yaml"]);
    assert_eq!(p.code, 0, "{}", p.stderr);
    assert!(p.stdout.contains("computed at run time"), "{}", p.stdout);
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let failure = sb.failure(&r.run_id());
    assert!(failure.contains("a template's budget"), "{failure}");
}
