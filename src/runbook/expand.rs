//! `for_each`: a step becomes one step per item once the params are known (`plan`, `run`,
//! `resume`, `drill`), before anything is planned or run. The result is an ordinary
//! [`ValidRunbook`], so the planner and the engine see steps, not loops: each made step has its
//! own rendered inputs, retries and checkpoint.
//!
//! A resumed run expands again with the params its log recorded and the file whose hash it
//! pinned, so it finds the same steps.

use std::collections::HashSet;

use indexmap::IndexMap;
use serde_json::Value;

use super::{ForEach, Member, ValidRunbook, ValidStep, templates};
use crate::diagnostics::{At, Code, Diagnostic, ptr};

/// The most steps one `for_each` may make: a list param from the command line is not a way to
/// start a million processes.
pub const MAX_ITEMS: usize = 10_000;

/// The runbook with each `for_each` step replaced by its steps, `needs` on a group replaced by
/// needs on every step of it. Linear in the number of steps and needs made.
pub fn expand(
    rb: &ValidRunbook,
    params: &IndexMap<String, Value>,
) -> Result<ValidRunbook, Vec<Diagnostic>> {
    if rb.steps.iter().all(|s| s.for_each.is_none()) {
        return Ok(rb.clone());
    }
    let env = templates::environment();
    let mut errors = Vec::new();
    // Old index -> the indices of the steps it became (one, unless it is a group).
    let mut made: Vec<Vec<usize>> = Vec::with_capacity(rb.steps.len());
    let mut steps: Vec<ValidStep> = Vec::with_capacity(rb.steps.len());
    let mut groups: IndexMap<String, Vec<usize>> = IndexMap::new();
    for s in &rb.steps {
        let Some(each) = &s.for_each else {
            made.push(vec![steps.len()]);
            steps.push(s.clone());
            continue;
        };
        let items = match items(&env, each, params, &s.at) {
            Ok(items) => items,
            Err(d) => {
                errors.push(d);
                made.push(Vec::new());
                continue;
            }
        };
        let keys = keys(&items);
        let first = steps.len();
        for (item, key) in items.into_iter().zip(keys) {
            let mut m = s.clone();
            m.id = format!("{}[{key}]", s.id);
            m.for_each = None;
            m.member = Some(Member {
                group: s.id.clone(),
                item,
            });
            steps.push(m);
        }
        made.push((first..steps.len()).collect());
        groups.insert(s.id.clone(), (first..steps.len()).collect());
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for s in &mut steps {
        let needs = std::mem::take(&mut s.needs);
        s.needs = needs
            .iter()
            .flat_map(|&n| made[n].iter().copied())
            .collect();
    }
    let mut out = rb.clone();
    out.steps = steps;
    out.groups = groups;
    Ok(out)
}

/// The items a `for_each` names, checked: a list of at most [`MAX_ITEMS`].
fn items(
    env: &minijinja::Environment<'_>,
    each: &ForEach,
    params: &IndexMap<String, Value>,
    at: &str,
) -> Result<Vec<Value>, Diagnostic> {
    let here = At::node(ptr(at, "for_each"));
    let items = match each {
        ForEach::Items(items) => items.clone(),
        ForEach::Template(t) => {
            // The whole string is one `{{ expression }}`: its value, not its text, is the list.
            let expr = t
                .trim()
                .strip_prefix("{{")
                .and_then(|r| r.strip_suffix("}}"))
                .map(str::trim)
                .unwrap_or(t);
            let ctx = minijinja::Value::from(minijinja::value::Serde(
                serde_json::json!({ "params": params }),
            ));
            let value = env
                .compile_expression(expr)
                .and_then(|e| e.eval(&ctx))
                .map_err(|e| {
                    Diagnostic::new(
                        Code::TemplateRender,
                        here.clone(),
                        format!(
                            "`for_each` fails to evaluate: {}",
                            e.detail().unwrap_or("error")
                        ),
                    )
                })?;
            match serde_json::to_value(&value) {
                Ok(Value::Array(items)) => items,
                Ok(other) => {
                    return Err(Diagnostic::new(
                        Code::TemplateRender,
                        here,
                        format!(
                            "`for_each` must be a list, and `{t}` is {} with these params",
                            crate::runbook::schema::short(&other)
                        ),
                    )
                    .help("use a param of `type: array` (`-p databases=orders,users`)"));
                }
                Err(e) => {
                    return Err(Diagnostic::new(
                        Code::TemplateRender,
                        here,
                        format!("`for_each` is not a list of values: {e}"),
                    ));
                }
            }
        }
    };
    if items.len() > MAX_ITEMS {
        return Err(Diagnostic::new(
            Code::TemplateRender,
            here,
            format!(
                "`for_each` makes {} steps; at most {MAX_ITEMS} are allowed",
                items.len()
            ),
        ));
    }
    Ok(items)
}

/// What goes between the brackets of each made step's id: the item itself when every item is
/// a short, plain, distinct string or number (`backup[orders]`); for objects, their `name` or
/// `id` on the same terms; otherwise the position (`backup[0]`), so ids stay unique and safe to
/// print.
fn keys(items: &[Value]) -> Vec<String> {
    let plain = |v: &Value| match v {
        Value::String(s)
            if !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
        {
            Some(s.clone())
        }
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let key = |v: &Value| match v {
        Value::Object(o) => o.get("name").or_else(|| o.get("id")).and_then(plain),
        v => plain(v),
    };
    let named: Option<Vec<String>> = items.iter().map(key).collect();
    match named {
        Some(names) if names.iter().collect::<HashSet<_>>().len() == names.len() => names,
        _ => (0..items.len()).map(|i| i.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rb(steps: &str) -> ValidRunbook {
        let text = format!(
            "apiVersion: lifeboat/v1\nkind: Runbook\nmetadata: {{name: t, version: 1.0.0}}\nparams:\n  dbs: {{type: array, items: string, default: [orders, users]}}\n{steps}"
        );
        crate::runbook::load_str("t.yaml", &text)
            .result
            .unwrap_or_else(|d| panic!("{d:?}"))
    }

    fn ids(rb: &ValidRunbook) -> Vec<(String, Vec<String>)> {
        rb.steps
            .iter()
            .map(|s| {
                (
                    s.id.clone(),
                    s.needs.iter().map(|&n| rb.steps[n].id.clone()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_group_becomes_a_step_per_item_and_needs_on_it_wait_for_all() {
        let r = rb(r#"steps:
  - {id: stop, action: shell, with: {argv: [x]}}
  - {id: backup, action: shell, needs: [stop], for_each: "{{ params.dbs }}", with: {argv: [dump, "{{ item }}"]}}
  - {id: done, action: shell, needs: [backup], with: {argv: [x]}}
"#);
        let params: IndexMap<String, Value> =
            [("dbs".to_string(), serde_json::json!(["orders", "users"]))].into();
        let e = expand(&r, &params).unwrap();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ids(&e),
            vec![
                ("stop".into(), vec![]),
                ("backup[orders]".into(), s(&["stop"])),
                ("backup[users]".into(), s(&["stop"])),
                ("done".into(), s(&["backup[orders]", "backup[users]"])),
            ]
        );
        assert_eq!(e.steps[2].member.as_ref().unwrap().item, "users");
        // No items: the group is empty, and what needs it need not wait.
        let none: IndexMap<String, Value> = [("dbs".to_string(), serde_json::json!([]))].into();
        let e = expand(&r, &none).unwrap();
        assert_eq!(
            ids(&e),
            vec![("stop".into(), vec![]), ("done".into(), vec![])]
        );
    }

    #[test]
    fn keys_are_the_items_when_they_are_plain_and_distinct_else_positions() {
        let k = |v: Value| keys(v.as_array().unwrap());
        assert_eq!(k(serde_json::json!(["a", 2, "b.c"])), ["a", "2", "b.c"]);
        assert_eq!(
            k(serde_json::json!([{"name": "x"}, {"id": "y"}])),
            ["x", "y"]
        );
        assert_eq!(k(serde_json::json!(["a b", "c"])), ["0", "1"]);
        assert_eq!(k(serde_json::json!(["a", "a"])), ["0", "1"]);
    }

    #[test]
    fn a_template_that_is_not_a_list_is_an_error_at_the_for_each() {
        let r = rb(r#"steps:
  - {id: backup, action: shell, for_each: "{{ params.dbs | join(',') }}", with: {argv: [x]}}
"#);
        let params: IndexMap<String, Value> =
            [("dbs".to_string(), serde_json::json!(["a"]))].into();
        let errors = expand(&r, &params).unwrap_err();
        assert_eq!(errors[0].code, Code::TemplateRender);
        assert!(
            errors[0].message.contains("must be a list"),
            "{:?}",
            errors[0]
        );
    }
}
