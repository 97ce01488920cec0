//! The docs say what the code does: every list in them that the code also knows (actions, their
//! effects, connection kinds, read-only actions) is generated from, or checked against, the
//! `actions!` list and `connection_kinds!`. A test here fails when they drift apart.

use std::collections::BTreeSet;

use lifeboat::actions::{Effect, Rule, catalog, in_words};
use lifeboat::runbook::ConnectionKind;

use crate::common;

const ACTIONS_MD: &str = "docs/actions.md";

fn rule(r: Rule) -> String {
    match r {
        Rule::Never => "no".into(),
        Rule::Always => "yes".into(),
        Rule::If(what) => what.into(),
    }
}

/// docs/actions.md as the code says it should be.
fn actions_reference() -> String {
    let mut out = String::from(
        "# Actions\n\n\
         Every action, generated from the `actions!` list in `src/actions/mod.rs` by\n\
         `tests/integration/docs.rs`. Do not edit it by hand: after changing an action, run\n\
         `LIFEBOAT_WRITE_DOCS=1 cargo nextest run docs::` and commit the result.\n\
         `lifeboat actions NAME` documents an action's `with` fields.\n\n\
         - **read-only**: whether the action only reads (and under which `with`); only read-only\n  \
         actions can be a drill's steady-state checks, and only the others can have a `compensate`.\n\
         - **otherwise**: what it does when it does not only read: *changes* (a `compensate` can\n  \
         change it back) or *irreversible*.\n\
         - **destructive**: whether `plan` marks it for reviewers: data or service may be lost if\n  \
         it runs at the wrong time.\n\n\
         | action | file | does | read-only | otherwise | destructive | outputs |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for a in catalog() {
        let file = match a.name.split_once('.') {
            Some((family, verb)) => format!("src/actions/{family}/{verb}.rs"),
            None => format!("src/actions/local/{}.rs", a.name),
        };
        let otherwise = match (a.read_only, a.changes) {
            (Rule::Always, _) => "—",
            (_, Effect::Irreversible) => "irreversible",
            (_, _) => "changes",
        };
        let outputs: Vec<String> = a.outputs.iter().map(|o| format!("`{}`", o.name)).collect();
        out.push_str(&format!(
            "| `{}` | `{file}` | {} | {} | {otherwise} | {} | {} |\n",
            a.name,
            a.summary,
            rule(a.read_only),
            rule(a.destructive),
            outputs.join(", ")
        ));
    }
    out
}

#[test]
fn the_actions_reference_is_generated_from_the_list() {
    let path = common::root().join(ACTIONS_MD);
    let generated = actions_reference();
    if std::env::var_os("LIFEBOAT_WRITE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{ACTIONS_MD} is stale; regenerate it with\n    LIFEBOAT_WRITE_DOCS=1 cargo nextest run docs::"
    );
}

/// The first column of every table whose header starts `| action |`: the actions it lists.
fn action_rows(text: &str) -> Vec<&str> {
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.starts_with("| action |") {
            in_table = true;
        } else if !line.starts_with('|') {
            in_table = false;
        } else if in_table && let Some(cell) = line.strip_prefix("| `") {
            rows.extend(cell.split_once('`').map(|(name, _)| name));
        }
    }
    rows
}

/// A family's table in its docs page lists all of the family's actions, and only real ones: a
/// new action shows up in its family's table, or this fails.
#[test]
fn each_family_table_in_the_docs_lists_exactly_that_familys_actions() {
    let names: BTreeSet<&str> = catalog().iter().map(|a| a.name).collect();
    let family = |name: &str| name.split_once('.').map_or("local", |(f, _)| f).to_string();
    let dir = common::root().join("docs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") || path.ends_with("actions.md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let rows: BTreeSet<&str> = action_rows(&text).into_iter().collect();
        for r in &rows {
            assert!(
                names.contains(r),
                "{} has a table row for `{r}`, which is not an action",
                path.display()
            );
        }
        let families: BTreeSet<String> = rows.iter().map(|r| family(r)).collect();
        for f in families {
            let expected: BTreeSet<&str> =
                names.iter().copied().filter(|n| family(n) == f).collect();
            let listed: BTreeSet<&str> = rows.iter().copied().filter(|n| family(n) == f).collect();
            assert_eq!(
                listed,
                expected,
                "{}'s table of the `{f}` family differs from the actions! list",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "found only {checked} family tables in docs/");
}

#[test]
fn the_steady_state_error_page_lists_exactly_the_read_only_actions() {
    let page = std::fs::read_to_string(common::root().join("docs/errors/LB0112.md")).unwrap();
    let list = in_words(|a| a.read_only);
    assert!(
        page.lines().any(|l| l == list),
        "docs/errors/LB0112.md should hold this line, the read-only actions:\n{list}"
    );
}

#[test]
fn the_runbook_format_lists_exactly_the_connection_kinds() {
    let doc = std::fs::read_to_string(common::root().join("docs/runbook-format.md")).unwrap();
    let kinds: Vec<String> = ConnectionKind::ALL
        .iter()
        .map(|k| format!("`{k}`"))
        .collect();
    let expected = format!(
        "| `connections.<name>` | exactly one of {} |",
        kinds.join(", ")
    );
    assert!(
        doc.lines().any(|l| l.starts_with(&expected)),
        "docs/runbook-format.md should describe connections as:\n{expected} ..."
    );
}

/// README's documentation list names every page in docs/: a page nobody can find is not
/// documentation.
#[test]
fn the_readme_links_every_docs_page() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(common::root().join("docs")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") && !readme.contains(&format!("](docs/{name})")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "README.md does not link docs/{missing:?}"
    );
}
