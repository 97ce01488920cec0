//! What a change to a runbook does to the procedure: two plans compared step by step, what a
//! reviewer must look at first (destructive steps, objectives, locks, approvals) called out,
//! and a changed procedure without a `metadata.version` bump refused. The plans are made with
//! the same params, so inputs are compared rendered, secrets as `***`.

use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use super::{Plan, PlannedStep};
use crate::runbook::StepPhase;

#[derive(Debug, Serialize)]
pub struct Diff {
    pub old: Side,
    pub new: Side,
    /// What a reviewer reads first.
    pub attention: Vec<String>,
    pub added: Vec<Brief>,
    pub removed: Vec<Brief>,
    pub changed: Vec<Changed>,
    /// Changes to the runbook itself, outside its steps.
    pub runbook: Vec<Field>,
    /// Why the change is refused: the procedure changed and the version did not go up.
    pub version_problem: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Side {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Serialize)]
pub struct Brief {
    pub id: String,
    pub action: String,
    pub destructive: bool,
    /// `on_failure` or `finally` for the steps of those lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Changed {
    pub id: String,
    pub action: String,
    pub destructive: bool,
    pub fields: Vec<Field>,
}

#[derive(Debug, Serialize)]
pub struct Field {
    pub field: String,
    pub old: String,
    pub new: String,
}

impl Diff {
    /// Whether the procedure is the same: nothing but words (descriptions, owners) changed.
    pub fn same_procedure(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self
                .changed
                .iter()
                .all(|c| c.fields.iter().all(|f| f.field == "description"))
            && self
                .runbook
                .iter()
                .all(|f| matches!(f.field.as_str(), "description" | "owners" | "version"))
    }
}

fn list_of(s: &PlannedStep) -> Option<&'static str> {
    match s.phase {
        StepPhase::Main => None,
        StepPhase::OnFailure => Some("on_failure"),
        StepPhase::Finally => Some("finally"),
    }
}

/// A value as one line: strings as they are, anything else as compact JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        other => other.to_string(),
    }
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "none".into())
}

/// The fields of a step that differ, `with` field by field.
fn step_fields(old: &PlannedStep, new: &PlannedStep) -> Vec<Field> {
    let mut out = Vec::new();
    let mut put = |field: &str, a: String, b: String| {
        if a != b {
            out.push(Field {
                field: field.into(),
                old: a,
                new: b,
            });
        }
    };
    put("action", old.action.clone(), new.action.clone());
    put("needs", old.needs.join(", "), new.needs.join(", "));
    let keys: Vec<&String> = {
        let mut k: Vec<&String> = old
            .inputs
            .as_object()
            .into_iter()
            .flat_map(|o| o.keys())
            .chain(new.inputs.as_object().into_iter().flat_map(|o| o.keys()))
            .collect();
        k.sort();
        k.dedup();
        k
    };
    for k in keys {
        put(
            &format!("with.{k}"),
            old.inputs.get(k).map_or_else(|| "absent".into(), text),
            new.inputs.get(k).map_or_else(|| "absent".into(), text),
        );
    }
    put("when", opt(&old.when), opt(&new.when));
    put("assert", opt(&old.assert), opt(&new.assert));
    put("timeout", old.timeout.clone(), new.timeout.clone());
    put(
        "retry",
        serde_json::to_string(&old.retry).unwrap_or_default(),
        serde_json::to_string(&new.retry).unwrap_or_default(),
    );
    put(
        "on_failure",
        format!("{:?}", old.on_failure).to_lowercase(),
        format!("{:?}", new.on_failure).to_lowercase(),
    );
    put(
        "compensate",
        old.compensate
            .as_ref()
            .map_or_else(|| "none".into(), |c| c.does.clone()),
        new.compensate
            .as_ref()
            .map_or_else(|| "none".into(), |c| c.does.clone()),
    );
    put(
        "list",
        list_of(old).unwrap_or("steps").into(),
        list_of(new).unwrap_or("steps").into(),
    );
    put("description", opt(&old.description), opt(&new.description));
    out
}

/// Compares the plans of two versions of a runbook, made with the same params.
pub fn diff(old: &Plan, new: &Plan) -> Diff {
    let brief = |s: &PlannedStep| Brief {
        id: s.id.clone(),
        action: s.action.clone(),
        destructive: s.destructive,
        list: list_of(s),
    };
    let find = |plan: &Plan, id: &str| plan.steps.iter().position(|s| s.id == id);
    let added: Vec<Brief> = new
        .steps
        .iter()
        .filter(|s| find(old, &s.id).is_none())
        .map(brief)
        .collect();
    let removed: Vec<Brief> = old
        .steps
        .iter()
        .filter(|s| find(new, &s.id).is_none())
        .map(brief)
        .collect();
    let changed: Vec<Changed> = new
        .steps
        .iter()
        .filter_map(|n| {
            let o = &old.steps[find(old, &n.id)?];
            let fields = step_fields(o, n);
            (!fields.is_empty()).then(|| Changed {
                id: n.id.clone(),
                action: n.action.clone(),
                destructive: n.destructive || o.destructive,
                fields,
            })
        })
        .collect();

    let mut runbook = Vec::new();
    let mut put = |field: &str, a: String, b: String| {
        if a != b {
            runbook.push(Field {
                field: field.into(),
                old: a,
                new: b,
            });
        }
    };
    put(
        "version",
        old.runbook.version.clone(),
        new.runbook.version.clone(),
    );
    put("rto", opt(&old.objectives.rto), opt(&new.objectives.rto));
    put("rpo", opt(&old.objectives.rpo), opt(&new.objectives.rpo));
    put("locks", old.locks.join(", "), new.locks.join(", "));
    put("timeout", opt(&old.timeout), opt(&new.timeout));
    put(
        "description",
        opt(&old.runbook.description),
        opt(&new.runbook.description),
    );
    put(
        "owners",
        old.runbook.owners.join(", "),
        new.runbook.owners.join(", "),
    );
    let scenarios = |p: &Plan| {
        p.scenarios
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    put("drill scenarios", scenarios(old), scenarios(new));

    // What a reviewer reads first.
    let mut attention = Vec::new();
    for f in &runbook {
        match f.field.as_str() {
            "rto" | "rpo" => attention.push(format!(
                "objective {}: {} -> {}",
                f.field.to_uppercase(),
                f.old,
                f.new
            )),
            "locks" => attention.push(format!("locks: [{}] -> [{}]", f.old, f.new)),
            "timeout" => attention.push(format!("run timeout: {} -> {}", f.old, f.new)),
            _ => {}
        }
    }
    for b in &added {
        if b.destructive {
            attention.push(format!("destructive step `{}` ({}) added", b.id, b.action));
        }
        if b.action == "approval" {
            attention.push(format!("approval `{}` added", b.id));
        }
    }
    for b in &removed {
        if b.destructive {
            attention.push(format!(
                "destructive step `{}` ({}) removed",
                b.id, b.action
            ));
        }
        if b.action == "approval" {
            attention.push(format!(
                "approval `{}` removed: what it guarded now runs without asking",
                b.id
            ));
        }
    }
    for c in &changed {
        if c.destructive {
            let names: Vec<&str> = c.fields.iter().map(|f| f.field.as_str()).collect();
            attention.push(format!(
                "destructive step `{}` ({}) changed: {}",
                c.id,
                c.action,
                names.join(", ")
            ));
        } else if c.action == "approval" {
            attention.push(format!("approval `{}` changed", c.id));
        }
        if let Some(f) = c.fields.iter().find(|f| f.field == "compensate") {
            attention.push(format!(
                "the undo of `{}` changed: {} -> {}",
                c.id, f.old, f.new
            ));
        }
    }

    let mut diff = Diff {
        old: Side {
            name: old.runbook.name.clone(),
            version: old.runbook.version.clone(),
        },
        new: Side {
            name: new.runbook.name.clone(),
            version: new.runbook.version.clone(),
        },
        attention,
        added,
        removed,
        changed,
        runbook,
        version_problem: None,
    };
    let (ov, nv) = (
        semver::Version::parse(&diff.old.version),
        semver::Version::parse(&diff.new.version),
    );
    if let (Ok(ov), Ok(nv)) = (ov, nv) {
        if nv < ov {
            diff.version_problem = Some(format!(
                "`metadata.version` went down, {ov} -> {nv}: a version is never reused"
            ));
        } else if nv == ov && !diff.same_procedure() {
            diff.version_problem = Some(format!(
                "the procedure changed and `metadata.version` is still {nv}: bump it (a run's log names the version that ran)"
            ));
        }
    }
    diff
}

/// For a terminal or a review log.
pub fn render_text(d: &Diff) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "Diff of {} {} -> {} {}",
        d.old.name, d.old.version, d.new.name, d.new.version
    );
    if let Some(p) = &d.version_problem {
        let _ = writeln!(o, "\nerror: {p}");
    }
    if d.same_procedure() {
        let _ = writeln!(o, "\nThe procedure is the same.");
    }
    if !d.attention.is_empty() {
        let _ = writeln!(o, "\nLook at these first:");
        for a in &d.attention {
            let _ = writeln!(o, "  ! {a}");
        }
    }
    let tag = |b: &Brief| {
        let mut t = Vec::new();
        if b.destructive {
            t.push("DESTRUCTIVE");
        }
        if let Some(l) = b.list {
            t.push(l);
        }
        if t.is_empty() {
            String::new()
        } else {
            format!("  [{}]", t.join(", "))
        }
    };
    for (title, list, mark) in [("added", &d.added, '+'), ("removed", &d.removed, '-')] {
        if !list.is_empty() {
            let _ = writeln!(o, "\nSteps {title} ({}):", list.len());
            for b in list.iter() {
                let _ = writeln!(o, "  {mark} {} ({}){}", b.id, b.action, tag(b));
            }
        }
    }
    if !d.changed.is_empty() {
        let _ = writeln!(o, "\nSteps changed ({}):", d.changed.len());
        for c in &d.changed {
            let dest = if c.destructive { "  [DESTRUCTIVE]" } else { "" };
            let _ = writeln!(o, "  ~ {} ({}){dest}", c.id, c.action);
            for f in &c.fields {
                let _ = writeln!(o, "      {}: {} -> {}", f.field, f.old, f.new);
            }
        }
    }
    let other: Vec<&Field> = d.runbook.iter().collect();
    if !other.is_empty() {
        let _ = writeln!(o, "\nRunbook:");
        for f in other {
            let _ = writeln!(o, "  {}: {} -> {}", f.field, f.old, f.new);
        }
    }
    o
}

/// For a pull-request comment.
pub fn render_markdown(d: &Diff) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "### `{}` {} → {}\n",
        d.new.name,
        md(&d.old.version),
        md(&d.new.version)
    );
    if let Some(p) = &d.version_problem {
        let _ = writeln!(o, "> **Error:** {}\n", md(p));
    }
    if d.same_procedure() {
        let _ = writeln!(o, "The procedure is the same.\n");
    }
    if !d.attention.is_empty() {
        let _ = writeln!(o, "**Look at these first**\n");
        for a in &d.attention {
            let _ = writeln!(o, "- ⚠️ {}", md(a));
        }
        o.push('\n');
    }
    let mut rows = Vec::new();
    for b in &d.added {
        rows.push((
            "added",
            b.id.clone(),
            b.action.clone(),
            b.destructive,
            String::new(),
        ));
    }
    for b in &d.removed {
        rows.push((
            "removed",
            b.id.clone(),
            b.action.clone(),
            b.destructive,
            String::new(),
        ));
    }
    for c in &d.changed {
        let what: Vec<String> = c
            .fields
            .iter()
            .map(|f| format!("`{}`: {} → {}", f.field, md(&f.old), md(&f.new)))
            .collect();
        rows.push((
            "changed",
            c.id.clone(),
            c.action.clone(),
            c.destructive,
            what.join("<br>"),
        ));
    }
    if !rows.is_empty() {
        let _ = writeln!(o, "| | step | action | what |\n|---|---|---|---|");
        for (kind, id, action, destructive, what) in rows {
            let id = if destructive {
                format!("`{}` **destructive**", md(&id))
            } else {
                format!("`{}`", md(&id))
            };
            let _ = writeln!(o, "| {kind} | {id} | `{action}` | {what} |");
        }
        o.push('\n');
    }
    if !d.runbook.is_empty() {
        let _ = writeln!(o, "**Runbook**\n");
        for f in &d.runbook {
            let _ = writeln!(o, "- `{}`: {} → {}", f.field, md(&f.old), md(&f.new));
        }
    }
    o
}

/// Text safe in a Markdown table cell: pipes and backticks escaped, one line, not too long.
fn md(s: &str) -> String {
    let one: String = s
        .replace('|', "\\|")
        .replace('`', "\\`")
        .replace(['\n', '\r'], " ");
    if one.chars().count() > 200 {
        one.chars().take(200).collect::<String>() + "…"
    } else {
        one
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Plan {
        let rb = crate::runbook::load_str("t.yaml", text)
            .result
            .unwrap_or_else(|d| panic!("{d:?}"));
        let params = crate::runbook::params::resolve(&rb, &[], true).unwrap();
        crate::plan::build(&rb, &params).unwrap()
    }

    const OLD: &str = r#"apiVersion: lifeboat/v1
kind: Runbook
metadata: {name: t, version: "1.0.0"}
objectives: {rto: 30m}
locks: [db]
steps:
  - {id: stop, action: shell, with: {argv: [stop]}}
  - {id: gate, action: approval, needs: [stop], with: {message: go}}
  - {id: restore, action: postgres.query, needs: [gate], with: {connection: db, sql: "drop table t", writes: true}}
connections:
  db: {postgres: {url: "postgres://x@127.0.0.1/a"}}
"#;

    #[test]
    fn destructive_changes_objectives_locks_and_approvals_come_first() {
        let new = OLD
            .replace("1.0.0", "1.1.0")
            .replace("rto: 30m", "rto: 45m")
            .replace("locks: [db]", "locks: [db, dns]")
            .replace(
                "  - {id: gate, action: approval, needs: [stop], with: {message: go}}\n",
                "",
            )
            .replace("needs: [gate]", "needs: [stop]")
            .replace("drop table t", "drop table u");
        let d = diff(&plan(OLD), &plan(&new));
        assert_eq!(d.version_problem, None);
        assert_eq!(
            d.attention,
            [
                "objective RTO: 30m -> 45m",
                "locks: [db] -> [db, dns]",
                "approval `gate` removed: what it guarded now runs without asking",
                "destructive step `restore` (postgres.query) changed: needs, with.sql",
            ]
        );
        let text = render_text(&d);
        assert!(
            text.contains("      with.sql: drop table t -> drop table u"),
            "{text}"
        );
        let md = render_markdown(&d);
        assert!(
            md.contains("| changed | `restore` **destructive** |"),
            "{md}"
        );
    }

    #[test]
    fn a_changed_procedure_needs_a_version_bump_and_words_do_not() {
        let same_version = OLD.replace("argv: [stop]", "argv: [stop, --now]");
        let d = diff(&plan(OLD), &plan(&same_version));
        assert!(
            d.version_problem
                .as_deref()
                .unwrap()
                .contains("still 1.0.0"),
            "{:?}",
            d.version_problem
        );
        let words = OLD.replace(
            "{id: stop, action: shell, with: {argv: [stop]}}",
            "{id: stop, action: shell, description: stops writers, with: {argv: [stop]}}",
        );
        let d = diff(&plan(OLD), &plan(&words));
        assert!(d.same_procedure());
        assert_eq!(d.version_problem, None);
        let down = OLD.replace("1.0.0", "0.9.0");
        assert!(
            diff(&plan(OLD), &plan(&down))
                .version_problem
                .unwrap()
                .contains("went down")
        );
    }
}
