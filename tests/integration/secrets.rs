//! Secrets through the real binary: every way to a secret's value is tainted or refused, child
//! processes get a secret only when their step asks, and the encodings a child makes of one
//! are masked. Each test tries many forms of its class, not one.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};

use crate::common;

use common::sandbox::{Sandbox, runbook};

const SECRET: &str = "Pa55/word+with?odd&chars";

/// What a reader could recognise the secret by: itself and what the common filters and
/// encodings make of it.
fn forms(secret: &str) -> Vec<String> {
    let mut f = vec![
        secret.to_string(),
        secret.to_uppercase(),
        secret.to_lowercase(),
        secret.chars().rev().collect(),
        secret[3..15].to_string(),
        STANDARD.encode(secret),
        STANDARD_NO_PAD.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
        secret.bytes().map(|b| format!("{b:02x}")).collect(),
        secret
            .replace('/', "%2F")
            .replace('+', "%2B")
            .replace('?', "%3F")
            .replace('&', "%26"),
    ];
    f.retain(|x| x.len() >= 6);
    f
}

/// Everything a run leaves for people to read: its log, `show`, `log`, and what it printed.
fn everything(sb: &Sandbox, id: &str, ran: &common::sandbox::Ran) -> Vec<(String, String)> {
    vec![
        (
            "log".into(),
            std::fs::read_to_string(sb.log_path(id)).unwrap(),
        ),
        ("show".into(), sb.lifeboat(&["show", id, "--json"]).stdout),
        ("log in words".into(), sb.lifeboat(&["log", id]).stdout),
        ("stdout".into(), ran.stdout.clone()),
        ("stderr".into(), ran.stderr.clone()),
    ]
}

fn assert_no_form(sb: &Sandbox, id: &str, ran: &common::sandbox::Ran) {
    for (place, text) in everything(sb, id, ran) {
        for f in forms(SECRET) {
            assert!(!text.contains(&f), "`{f}` leaked into {place}:\n{text}");
        }
    }
}

/// The value of a secret reached by another name: the variable it is read from (looked up by
/// a computed name, which validation cannot see), another variable holding the same value, and
/// a param given it by mistake. Each, through each filter, is tainted: recorded as `***`, and
/// masked wherever what it produced shows up.
#[test]
fn a_secret_reached_by_any_other_name_is_tainted() {
    let sources = [
        "env['LB_TEST' ~ '_TOKEN']",
        "env.LB_COPY",
        "params.p",
        "(params | items | list)[0][1]",
    ];
    let filters = [
        "",
        " | upper",
        " | lower",
        " | reverse",
        " | b64encode",
        " | urlencode",
        " | tojson",
        "[3:15]",
        " | list | join('-')",
        " | replace('a', '@')",
        " ~ '!'",
    ];
    let mut lines = String::new();
    let mut n = 0;
    for s in sources {
        for f in filters {
            lines.push_str(&format!("        - \"{{{{ {s}{f} }}}}\"\n"));
            n += 1;
        }
    }
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "names",
            &format!(
                r#"
secrets:
  token: {{env: LB_TEST_TOKEN}}
params:
  p: {{type: string}}
steps:
  - id: echo_all
    action: shell
    with:
      argv:
        - sh
        - -c
        - 'for a in "$@"; do echo "$a"; done'
        - sh
{lines}"#
            ),
        ),
    );
    let r = sb.lifeboat_env(
        &["run", "r.yaml", "-p", &format!("p={SECRET}")],
        &[("LB_TEST_TOKEN", SECRET), ("LB_COPY", SECRET)],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id = r.run_id();
    let events = sb.events(&id);
    let argv = events[1]["inputs"]["argv"].as_array().unwrap();
    assert_eq!(argv.len(), 4 + n);
    for (i, a) in argv.iter().enumerate().skip(4) {
        assert_eq!(a, "***", "argument {i} was recorded in clear: {a}");
    }
    // The step got the real values: one line per argument, each masked in its output.
    let stdout = sb.outputs(&id, "echo_all")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(stdout.lines().count(), n, "{stdout}");
    assert_no_form(&sb, &id, &r);
}

/// Read by its variable's own name, validation refuses it before anything runs.
#[test]
fn reading_a_secrets_variable_through_env_is_refused() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "env",
            "secrets:\n  token: {env: LB_TEST_TOKEN}\nsteps:\n  - {id: a, action: shell, with: {argv: [echo, \"{{ env.LB_TEST_TOKEN | upper }}\"]}}\n",
        ),
    );
    let r = sb.lifeboat_env(&["run", "r.yaml"], &[("LB_TEST_TOKEN", SECRET)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("error[LB0125]"), "{}", r.stderr);
    assert!(
        r.stderr.contains("read it as `secrets.token`"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(SECRET));
}

/// A child process inherits no secret: not the variable a secret is read from, not another
/// holding its value. It gets one when its step asks, under the name it asks for.
#[test]
fn a_child_gets_a_secret_only_when_its_step_asks() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "children",
            r#"
secrets:
  token: {env: LB_TEST_TOKEN}
steps:
  - id: asks_nothing
    action: shell
    with: {script: 'echo "${LB_TEST_TOKEN-unset}|${LB_COPY-unset}|${LB_PLAIN-unset}"; env | grep -F -c -- "Pa55" || true'}
  - id: asks
    action: shell
    needs: [asks_nothing]
    with:
      script: 'printf "%s" "$T" | wc -c; echo "${LB_TEST_TOKEN-unset}"'
      env: {T: "{{ secrets.token }}"}
  - id: argv_too
    action: shell
    needs: [asks]
    with: {argv: [sh, -c, 'echo "${LB_TEST_TOKEN-unset}|${LB_COPY-unset}"']}
"#,
        ),
    );
    let r = sb.lifeboat_env(
        &["run", "r.yaml"],
        &[
            ("LB_TEST_TOKEN", SECRET),
            ("LB_COPY", SECRET),
            ("LB_PLAIN", "plain-value"),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id = r.run_id();
    let out = |s: &str| sb.outputs(&id, s)["stdout"].as_str().unwrap().to_string();
    assert_eq!(out("asks_nothing"), "unset|unset|plain-value\n0\n");
    assert_eq!(
        out("asks").split_whitespace().collect::<Vec<_>>(),
        [&SECRET.len().to_string(), "unset"]
    );
    assert_eq!(out("argv_too"), "unset|unset\n");
}

/// What a child process makes of a secret with no template involved: base64 (both alphabets,
/// any alignment inside a larger text), hex, an HTTP Basic credential, percent-encoding.
#[test]
fn encodings_a_child_makes_of_a_secret_are_masked() {
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "encodings",
            r#"
secrets:
  token: {env: LB_TEST_TOKEN}
steps:
  - id: encode
    action: shell
    with:
      env: {T: "{{ secrets.token }}"}
      script: |
        for p in "" a ab abc "user:" '{"password":"'; do
          printf '%s%s' "$p" "$T" | base64 | tr -d '\n'; echo
          printf '%s%s' "$p" "$T" | base64 | tr -d '\n=' | tr '+/' '-_'; echo
          printf '%s%s' "$p" "$T" | od -An -tx1 | tr -d ' \n'; echo
        done
        echo "Authorization: Basic $(printf 'ops:%s' "$T" | base64 | tr -d '\n')"
        python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["T"], safe=""))'
        python3 -c 'import os; print(os.environ["T"].encode().hex().upper())'
        echo "it failed with $(printf '%s' "$T" | base64)" >&2
        exit 3
"#,
        ),
    );
    let r = sb.lifeboat_env(&["run", "r.yaml"], &[("LB_TEST_TOKEN", SECRET)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let id = r.run_id();
    let mut expected = Vec::new();
    for p in ["", "a", "ab", "abc", "user:", "{\"password\":\""] {
        let plain = format!("{p}{SECRET}");
        expected.push(STANDARD.encode(&plain));
        expected.push(URL_SAFE_NO_PAD.encode(&plain));
        expected.push(
            plain
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        );
    }
    expected.push(STANDARD.encode(format!("ops:{SECRET}")));
    expected.push(SECRET.bytes().map(|b| format!("{b:02X}")).collect());
    for (place, text) in everything(&sb, &id, &r) {
        for e in &expected {
            // The part that depends only on the secret: what a reader could decode.
            let core = &e[4.min(e.len())..e.len().saturating_sub(4)];
            assert!(!text.contains(core), "`{e}` leaked into {place}:\n{text}");
        }
    }
    let failure = sb.failure(&id);
    assert!(failure.contains("***"), "{failure}");
    assert_no_form(&sb, &id, &r);
}
