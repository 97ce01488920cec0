//! Rendering a step's `with` for one attempt, and the taint that keeps secrets out of the record.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;

use super::secrets::{MASK, Masker};
use crate::actions::is_template;
use crate::runbook::templates;

/// A rendered `with`: the real values the action gets, and what the run log records.
pub struct Rendered {
    pub real: Value,
    pub recorded: Value,
}

/// Renders `with` in `ctx`, whose `secrets` raise `touched` when read.
pub fn render(
    env: &minijinja::Environment<'_>,
    with: &Value,
    ctx: &minijinja::Value,
    touched: &AtomicBool,
    masker: &Masker,
) -> Result<Rendered, String> {
    let mut recorded = with.clone();
    let real = walk(env, with, "/with", ctx, touched, masker, &mut recorded)?;
    Ok(Rendered { real, recorded })
}

/// A named connection's fields with their templates rendered: what an action's
/// `Exec::connection` returns, in a run and in `plan --live` alike.
pub fn connection(
    rb: &crate::runbook::ValidRunbook,
    scope: &super::context::RunScope,
    env: &minijinja::Environment<'_>,
    masker: &Masker,
    name: &str,
) -> Result<Value, String> {
    let c = rb
        .connections
        .get(name)
        .ok_or_else(|| format!("no connection `{name}`"))?;
    let touched = std::sync::Arc::new(AtomicBool::new(false));
    let ctx = scope.context(None, None, Some(&touched));
    render(env, &c.fields, &ctx, &touched, masker)
        .map(|r| r.real)
        .map_err(|e| format!("connection `{name}`: {e}"))
}

/// Renders each template on its own, so that taint is known per value. A template taints what
/// it produced when it read a secret at run time, or names `secrets` at all (for reads that
/// happen only on some branch): the recorded value becomes `***`, and the text it produced,
/// whatever it did to the secret, is masked wherever else it shows up.
fn walk(
    env: &minijinja::Environment<'_>,
    template: &Value,
    pointer: &str,
    ctx: &minijinja::Value,
    touched: &AtomicBool,
    masker: &Masker,
    recorded: &mut Value,
) -> Result<Value, String> {
    Ok(match template {
        Value::String(t) if is_template(t) => {
            touched.store(false, Ordering::SeqCst);
            let real = templates::render_value(env, template, pointer, ctx, &|_| None)
                .map_err(|d| d.message)?;
            if touched.load(Ordering::SeqCst)
                || templates::template_roots(env, t).contains("secrets")
            {
                register(&real, masker);
                *recorded = Value::String(MASK.into());
            } else {
                *recorded = real.clone();
            }
            real
        }
        Value::Array(items) => {
            let Value::Array(out) = recorded else {
                unreachable!("recorded mirrors the template")
            };
            let mut real = Vec::with_capacity(items.len());
            for (i, (t, o)) in items.iter().zip(out.iter_mut()).enumerate() {
                real.push(walk(
                    env,
                    t,
                    &crate::diagnostics::ptr(pointer, i),
                    ctx,
                    touched,
                    masker,
                    o,
                )?);
            }
            Value::Array(real)
        }
        Value::Object(map) => {
            let Value::Object(out) = recorded else {
                unreachable!("recorded mirrors the template")
            };
            let mut real = serde_json::Map::with_capacity(map.len());
            for (k, t) in map {
                let o = out.get_mut(k).expect("recorded mirrors the template");
                real.insert(
                    k.clone(),
                    walk(
                        env,
                        t,
                        &crate::diagnostics::ptr(pointer, k),
                        ctx,
                        touched,
                        masker,
                        o,
                    )?,
                );
            }
            Value::Object(real)
        }
        other => other.clone(),
    })
}

fn register(v: &Value, masker: &Masker) {
    match v {
        Value::String(s) => masker.add(s),
        Value::Number(n) => masker.add(&n.to_string()),
        Value::Array(items) => items.iter().for_each(|i| register(i, masker)),
        Value::Object(m) => m.values().for_each(|i| register(i, masker)),
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_transformed_secret_is_tainted_and_masked() {
        let env = templates::environment();
        let mut secrets = super::super::secrets::Secrets::default();
        secrets.values.insert("token".into(), "sup3r-s3cret".into());
        let masker = Masker::new(&secrets);
        let scope = crate::engine::context::RunScope::new(
            &[("who".to_string(), json!("ops"))].into_iter().collect(),
            &secrets,
            serde_json::Map::new(),
        );
        let touched = AtomicBool::new(false);
        let touched = std::sync::Arc::new(touched);
        let ctx = scope.context(None, None, Some(&touched));
        let with = json!({
            "script": "echo {{ secrets.token[2:9] | upper | reverse }}",
            "env": {"WHO": "{{ params.who }}", "B": "{{ secrets.token | b64encode }}"},
            "argv": ["x", "{{ secrets.token | length }}"],
        });
        let r = render(&env, &with, &ctx, &touched, &masker).unwrap();
        assert_eq!(
            r.recorded,
            json!({"script": "***", "env": {"WHO": "ops", "B": "***"}, "argv": ["x", "***"]})
        );
        let sliced = r.real["script"].as_str().unwrap().to_string();
        assert_eq!(sliced, "echo C3S-R3P");
        assert_eq!(masker.scrub(&format!("out: {sliced}")), "out: ***");
        assert_eq!(r.real["argv"][1], 12);
    }
}
