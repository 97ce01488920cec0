//! Params: checking their declarations and the values given with `-p name=value`.

use indexmap::IndexMap;
use serde_json::Value;

use super::{Param, ParamType, ValidRunbook};
use crate::diagnostics::{At, Code, Diagnostic, did_you_mean, ptr};

pub fn fits(ty: ParamType, v: &Value) -> bool {
    match ty {
        ParamType::String => v.is_string(),
        ParamType::Integer => v.is_i64() || v.is_u64(),
        ParamType::Number => v.is_number(),
        ParamType::Boolean => v.is_boolean(),
        ParamType::Array => v.is_array(),
    }
}

/// Whether a value fits a param: its type, and for an `array` each item's.
pub fn fits_param(p: &Param, v: &Value) -> bool {
    match (p.ty, v) {
        (ParamType::Array, Value::Array(items)) => {
            let item = p.items.unwrap_or(ParamType::String);
            items.iter().all(|i| fits(item, i))
        }
        (ty, v) => fits(ty, v),
    }
}

/// The values `enum` is about: the value itself, or an array's items.
fn checked_values(p: &Param, v: &Value) -> Vec<Value> {
    match (p.ty, v) {
        (ParamType::Array, Value::Array(items)) => items.clone(),
        _ => vec![v.clone()],
    }
}

/// `array of string`, `integer`: for messages.
pub fn type_words(p: &Param) -> String {
    match (p.ty, p.items) {
        (ParamType::Array, Some(item)) => format!("array of {}", item.as_str()),
        (ParamType::Array, None) => "array of string".into(),
        (ty, _) => ty.as_str().into(),
    }
}

/// Reads a command-line value as the param's type; an `array` as JSON (`["a", "b"]`) or as
/// comma-separated items (`a,b`, each trimmed; nothing at all is the empty list).
pub fn parse_param(p: &Param, text: &str) -> Result<Value, String> {
    if p.ty != ParamType::Array {
        return parse_value(p.ty, text);
    }
    let item = p.items.unwrap_or(ParamType::String);
    if text.trim_start().starts_with('[') {
        let v: Value =
            serde_json::from_str(text).map_err(|e| format!("`{text}` is not a JSON array: {e}"))?;
        let Value::Array(items) = &v else {
            return Err(format!("`{text}` is not a JSON array"));
        };
        if let Some(bad) = items.iter().find(|i| !fits(item, i)) {
            return Err(format!("the item {bad} is not {}", item.as_str()));
        }
        return Ok(v);
    }
    if text.trim().is_empty() {
        return Ok(Value::Array(Vec::new()));
    }
    text.split(',')
        .map(|piece| parse_value(item, piece.trim()))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// Reads a command-line value as a scalar type.
pub fn parse_value(ty: ParamType, text: &str) -> Result<Value, String> {
    match ty {
        // Declarations with array items are refused; a command line has no syntax for them.
        ParamType::Array => Err(format!("`{text}`: an array's items cannot be arrays")),
        ParamType::String => Ok(Value::String(text.to_string())),
        ParamType::Integer => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("`{text}` is not an integer")),
        ParamType::Number => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("`{text}` is not a number")),
        ParamType::Boolean => match text.trim() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("`{text}` is not a boolean; write true or false")),
        },
    }
}

/// Checks a declaration: the default and the enum values fit the type, the default is allowed.
pub fn check_declaration(name: &str, p: &Param, out: &mut Vec<Diagnostic>) {
    let at = ptr("/params", name);
    let ty = match p.ty {
        ParamType::Integer => "an integer".to_string(),
        ParamType::String => "a string".into(),
        ParamType::Number => "a number".into(),
        ParamType::Boolean => "a boolean".into(),
        ParamType::Array => format!("an {}", type_words(p)),
    };
    match (p.ty, p.items) {
        (ParamType::Array, Some(ParamType::Array)) => out.push(Diagnostic::new(
            Code::ParamDefinition,
            At::node(ptr(&at, "items")),
            format!("the items of `{name}` cannot be arrays: a command line could not give them"),
        )),
        (ParamType::Array, None) => out.push(
            Diagnostic::new(
                Code::ParamDefinition,
                At::key(at.clone()),
                format!("`{name}` is an array: say what its items are"),
            )
            .help("add `items: string` (or integer, number, boolean)"),
        ),
        (ParamType::Array, Some(_)) | (_, None) => {}
        (_, Some(_)) => out.push(Diagnostic::new(
            Code::ParamDefinition,
            At::key(ptr(&at, "items")),
            format!("`items` is for `type: array`; `{name}` is {ty}"),
        )),
    }
    // What `enum` holds: values, or an array's items.
    let allowed_type = match p.ty {
        ParamType::Array => p.items.unwrap_or(ParamType::String),
        ty => ty,
    };
    if let Some(d) = &p.default {
        if !fits_param(p, d) {
            out.push(Diagnostic::new(
                Code::ParamDefinition,
                At::node(ptr(&at, "default")),
                format!("the default of `{name}` is not {ty}"),
            ));
        } else if let Some(allowed) = &p.one_of
            && !checked_values(p, d).iter().all(|v| allowed.contains(v))
        {
            out.push(Diagnostic::new(
                Code::ParamDefinition,
                At::node(ptr(&at, "default")),
                format!("the default of `{name}` is not one of its `enum` values"),
            ));
        }
    }
    if let Some(allowed) = &p.one_of {
        if allowed.is_empty() {
            out.push(Diagnostic::new(
                Code::ParamDefinition,
                At::node(ptr(&at, "enum")),
                format!("`{name}` has an empty `enum`: no value could be given"),
            ));
        }
        for (i, v) in allowed.iter().enumerate() {
            if !fits(allowed_type, v) {
                out.push(Diagnostic::new(
                    Code::ParamDefinition,
                    At::node(ptr(&ptr(&at, "enum"), i)),
                    format!("this `enum` value of `{name}` is not {ty}"),
                ));
            }
        }
    }
    if p.required == Some(true) && p.default.is_some() {
        out.push(
            Diagnostic::new(
                Code::ParamDefinition,
                At::key(ptr(&at, "required")),
                format!("`{name}` is required but has a default"),
            )
            .help("a default makes the param optional; drop one of the two"),
        );
    }
}

pub fn is_required(p: &Param) -> bool {
    p.required.unwrap_or(p.default.is_none())
}

/// The params' values for one plan or run: given values, typed, then defaults.
/// `require_all`: report required params that were not given (plan, run); `validate` does not.
pub fn resolve(
    rb: &ValidRunbook,
    given: &[(String, String)],
    require_all: bool,
) -> Result<IndexMap<String, Value>, Vec<Diagnostic>> {
    let mut out = Vec::new();
    let mut values = IndexMap::new();
    for (name, text) in given {
        let Some(p) = rb.params.get(name) else {
            let at = if rb.params.is_empty() {
                At::File
            } else {
                At::key("/params")
            };
            out.push(
                Diagnostic::new(
                    Code::UnknownParam,
                    at,
                    format!("unknown param `{name}` given with -p"),
                )
                .help(
                    did_you_mean(name, rb.params.keys().map(String::as_str)).unwrap_or_else(|| {
                        if rb.params.is_empty() {
                            "this runbook declares no params".into()
                        } else {
                            format!(
                                "declared params: {}",
                                rb.params.keys().cloned().collect::<Vec<_>>().join(", ")
                            )
                        }
                    }),
                ),
            );
            continue;
        };
        let at = At::key(ptr("/params", name));
        match parse_param(p, text) {
            Ok(v) => match &p.one_of {
                Some(allowed) if !checked_values(p, &v).iter().all(|x| allowed.contains(x)) => {
                    let words = |a: &Value| a.as_str().map_or_else(|| a.to_string(), String::from);
                    let list: Vec<String> = allowed.iter().map(words).collect();
                    // An array's first item that is not allowed, or the value itself.
                    let bad = checked_values(p, &v)
                        .into_iter()
                        .find(|x| !allowed.contains(x))
                        .map(|x| words(&x))
                        .unwrap_or_else(|| text.clone());
                    out.push(
                        Diagnostic::new(
                            Code::BadParamValue,
                            at,
                            format!(
                                "-p {name}={text}: `{bad}` is not one of {}",
                                list.join(", ")
                            ),
                        )
                        .help_opt(did_you_mean(&bad, list.iter().map(String::as_str))),
                    );
                }
                _ => {
                    values.insert(name.clone(), v);
                }
            },
            Err(why) => out.push(
                Diagnostic::new(Code::BadParamValue, at, format!("-p {name}={text}: {why}"))
                    .label(format!("declared as {}", type_words(p))),
            ),
        }
    }
    for (name, p) in &rb.params {
        if values.contains_key(name) || given.iter().any(|(n, _)| n == name) {
            continue;
        }
        match &p.default {
            Some(d) => {
                values.insert(name.clone(), d.clone());
            }
            None if is_required(p) => {
                if require_all {
                    out.push(
                        Diagnostic::new(
                            Code::MissingParam,
                            At::key(ptr("/params", name)),
                            format!("param `{name}` is required"),
                        )
                        .help(format!("give it with `-p {name}=<{}>`", type_words(p))),
                    );
                }
            }
            None => {
                values.insert(name.clone(), Value::Null);
            }
        }
    }
    if out.is_empty() { Ok(values) } else { Err(out) }
}

/// Splits `name=value`.
pub fn split_assignment(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not of the form name=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed() {
        assert_eq!(parse_value(ParamType::Integer, "42"), Ok(Value::from(42)));
        assert!(parse_value(ParamType::Integer, "4.2").is_err());
        assert_eq!(
            parse_value(ParamType::Boolean, "true"),
            Ok(Value::Bool(true))
        );
        assert!(parse_value(ParamType::Boolean, "yes").is_err());
        assert!(parse_value(ParamType::Number, "NaN").is_err());
        assert_eq!(
            parse_value(ParamType::String, "x=y"),
            Ok(Value::from("x=y"))
        );
        assert_eq!(split_assignment("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(split_assignment("=b").is_err());
    }

    fn array(items: ParamType) -> Param {
        Param {
            ty: ParamType::Array,
            items: Some(items),
            default: None,
            one_of: None,
            required: None,
            description: None,
        }
    }

    #[test]
    fn an_array_is_given_as_json_or_comma_separated() {
        let dbs = array(ParamType::String);
        assert_eq!(
            parse_param(&dbs, "orders, users").unwrap(),
            serde_json::json!(["orders", "users"])
        );
        assert_eq!(
            parse_param(&dbs, r#"["a,b", "c"]"#).unwrap(),
            serde_json::json!(["a,b", "c"])
        );
        assert_eq!(parse_param(&dbs, "").unwrap(), serde_json::json!([]));
        let ports = array(ParamType::Integer);
        assert_eq!(
            parse_param(&ports, "5432,5433").unwrap(),
            serde_json::json!([5432, 5433])
        );
        assert_eq!(
            parse_param(&ports, "5432,x").unwrap_err(),
            "`x` is not an integer"
        );
        assert!(
            parse_param(&ports, r#"["5432"]"#)
                .unwrap_err()
                .contains("is not integer")
        );
        assert!(fits_param(&ports, &serde_json::json!([1, 2])));
        assert!(!fits_param(&ports, &serde_json::json!([1, "2"])));
        assert_eq!(type_words(&ports), "array of integer");
    }
}
