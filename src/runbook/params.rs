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
    }
}

/// Reads a command-line value as the param's type.
pub fn parse_value(ty: ParamType, text: &str) -> Result<Value, String> {
    match ty {
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
        ParamType::Integer => "an integer",
        ParamType::String => "a string",
        ParamType::Number => "a number",
        ParamType::Boolean => "a boolean",
    };
    if let Some(d) = &p.default {
        if !fits(p.ty, d) {
            out.push(Diagnostic::new(
                Code::ParamDefinition,
                At::node(ptr(&at, "default")),
                format!("the default of `{name}` is not {ty}"),
            ));
        } else if let Some(allowed) = &p.one_of
            && !allowed.contains(d)
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
            if !fits(p.ty, v) {
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
        match parse_value(p.ty, text) {
            Ok(v) => match &p.one_of {
                Some(allowed) if !allowed.contains(&v) => {
                    let list: Vec<String> = allowed
                        .iter()
                        .map(|a| a.as_str().map_or_else(|| a.to_string(), String::from))
                        .collect();
                    out.push(
                        Diagnostic::new(
                            Code::BadParamValue,
                            at,
                            format!(
                                "-p {name}={text}: `{text}` is not one of {}",
                                list.join(", ")
                            ),
                        )
                        .help_opt(did_you_mean(text, list.iter().map(String::as_str))),
                    );
                }
                _ => {
                    values.insert(name.clone(), v);
                }
            },
            Err(why) => out.push(
                Diagnostic::new(Code::BadParamValue, at, format!("-p {name}={text}: {why}"))
                    .label(format!("declared as {}", p.ty.as_str())),
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
                        .help(format!("give it with `-p {name}=<{}>`", p.ty.as_str())),
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
}
