//! `lifeboat actions [NAME]`: each action's `with` fields and outputs, from the same types that
//! generate the schema.

use serde_json::{Value, json};

use crate::actions::{ActionInfo, catalog};
use crate::diagnostics::did_you_mean;
use crate::error::{Error, Result};
use crate::exit::Exit;

pub(super) fn run(name: Option<&str>, as_json: bool) -> Result<Exit> {
    let all = catalog();
    let Some(name) = name else {
        if as_json {
            let list: Vec<Value> = all.iter().map(to_json).collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(&list).expect("serializes")
            );
        } else {
            let width = all.iter().map(|a| a.name.len()).max().unwrap_or(0);
            for a in &all {
                let plan_only = if a.runnable {
                    ""
                } else {
                    "  (plan only in this version)"
                };
                outln!("{:width$}  {}{plan_only}", a.name, a.summary);
            }
        }
        return Ok(Exit::Success);
    };
    let Some(info) = all.iter().find(|a| a.name == name) else {
        let hint = did_you_mean(name, all.iter().map(|a| a.name))
            .map(|h| format!("; {h}"))
            .unwrap_or_default();
        return Err(Error::Invalid(format!("unknown action `{name}`{hint}")));
    };
    if as_json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&to_json(info)).expect("serializes")
        );
    } else {
        out!("{}", document(info));
    }
    Ok(Exit::Success)
}

fn to_json(a: &ActionInfo) -> Value {
    json!({
        "name": a.name,
        "summary": a.summary,
        "runnable": a.runnable,
        "with": a.with_schema.clone().to_value(),
        "outputs": a.outputs,
    })
}

/// The human page for one action.
pub fn document(a: &ActionInfo) -> String {
    let schema = a.with_schema.clone().to_value();
    let mut out = format!("{}\n  {}\n", a.name, a.summary);
    if !a.runnable {
        out.push_str("  This version of lifeboat validates and plans it, but cannot run it yet.\n");
    }
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        out.push_str(&format!("\n{}\n", indent(d, "  ")));
    }
    out.push_str("\nwith:\n");
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (field, s) in props {
            let req = if required.contains(&field.as_str()) {
                "required"
            } else {
                "optional"
            };
            out.push_str(&format!("  {field}  ({}, {req})\n", type_of(s, &schema)));
            if let Some(d) = s.get("description").and_then(Value::as_str) {
                out.push_str(&format!("{}\n", indent(d, "      ")));
            }
        }
    }
    out.push_str("\noutputs:\n");
    for o in a.outputs {
        out.push_str(&format!("  {}  {}\n", o.name, o.description));
    }
    out
}

fn indent(text: &str, by: &str) -> String {
    text.lines()
        .map(|l| format!("{by}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn type_of(s: &Value, root: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let target = r.strip_prefix("#").and_then(|p| root.pointer(p));
        return match target {
            Some(t) if t.get("enum").is_some() => enum_list(t),
            Some(t) if t.get("oneOf").is_some() => {
                let vals: Vec<String> = t["oneOf"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| {
                        v.get("const")
                            .map(|c| c.as_str().map_or_else(|| c.to_string(), String::from))
                    })
                    .collect();
                if vals.is_empty() {
                    r.rsplit('/').next().unwrap_or(r).to_string()
                } else {
                    format!("one of: {}", vals.join(", "))
                }
            }
            Some(t) if t.get("anyOf").is_some() => format!(
                "{} or template",
                t["anyOf"][0]
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("value")
            ),
            Some(t) => t
                .get("type")
                .map(type_name)
                .unwrap_or_else(|| r.rsplit('/').next().unwrap_or(r).to_string()),
            None => r.to_string(),
        };
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let parts: Vec<String> = any
            .iter()
            .filter(|b| b.get("type") != Some(&json!("null")))
            .map(|b| type_of(b, root))
            .collect();
        return parts.join(" or ");
    }
    if s.get("enum").is_some() {
        return enum_list(s);
    }
    match s.get("type") {
        Some(Value::String(t)) if t == "array" => format!(
            "list of {}",
            s.get("items").map_or("values".into(), |i| type_of(i, root))
        ),
        Some(t) => type_name(t),
        None => "any".into(),
    }
}

fn enum_list(s: &Value) -> String {
    let vals: Vec<String> = s["enum"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
        .collect();
    format!("one of: {}", vals.join(", "))
}

fn type_name(t: &Value) -> String {
    match t {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| *s != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    }
}
