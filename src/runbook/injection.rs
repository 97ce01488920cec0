//! Where a template pastes a value into code as it is: a param, a step's output or an
//! environment variable in a shell script or in SQL, where a quote or a `;` in the value would
//! become code. Validation warns (LB0127) with the safe form; the fields that are code are
//! declared by each action (`ActionSpec::code`).

use indexmap::IndexMap;

use super::{Param, ParamType};
use crate::actions::Language;

/// The `{{ … }}` holes of `template` that paste a value that could carry code, unquoted.
pub fn unquoted<'t>(
    template: &'t str,
    lang: Language,
    params: &IndexMap<String, Param>,
) -> Vec<&'t str> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else { break };
        let hole = after[..close].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        if !safe(hole, lang, params) {
            out.push(hole);
        }
        rest = &after[close + 2..];
    }
    out
}

/// Quoted for the language, or a value that cannot carry code: a typed or enumerated param, an
/// id of the run, a literal.
fn safe(hole: &str, lang: Language, params: &IndexMap<String, Param>) -> bool {
    let last = hole.rsplit('|').next().unwrap_or("").trim();
    let quoted = match lang {
        Language::Shell => last == "shell_quote",
        Language::Sql => matches!(last, "sql_literal" | "sql_ident"),
        // No quoting filter: Cypher takes values as `$name` parameters.
        Language::Cypher => false,
    };
    if hole.contains('|') && quoted {
        return true;
    }
    if let Some(name) = hole.strip_prefix("params.")
        && let Some(p) = params.get(name)
    {
        return p.one_of.is_some()
            || matches!(
                p.ty,
                ParamType::Integer | ParamType::Number | ParamType::Boolean
            );
    }
    let reads = |root: &str| {
        hole.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .any(|w| w == root || w.starts_with(&format!("{root}.")))
    };
    // A failure's message is whatever a server or a process said.
    !["params", "steps", "outputs", "env", "secrets", "run.error"]
        .iter()
        .any(|r| reads(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> IndexMap<String, Param> {
        let p = |ty: &str, extra: &str| -> Param {
            serde_json::from_str(&format!("{{\"type\": \"{ty}\"{extra}}}")).unwrap()
        };
        [
            ("db".to_string(), p("string", "")),
            ("n".to_string(), p("integer", "")),
            (
                "env".to_string(),
                p("string", ", \"enum\": [\"prod\", \"dr\"]"),
            ),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn pasted_values_are_found_and_quoted_or_typed_ones_are_not() {
        let p = params();
        let shell = |t| unquoted(t, Language::Shell, &p);
        assert_eq!(shell("pg_dump {{ params.db }} > x"), ["params.db"]);
        assert_eq!(
            shell("echo {{ steps.a.outputs.stdout | trim }}"),
            ["steps.a.outputs.stdout | trim"]
        );
        assert_eq!(
            shell("echo {{ env.HOME }}-{{- secrets.pw -}}"),
            ["env.HOME", "secrets.pw"]
        );
        assert!(shell("pg_dump {{ params.db | shell_quote }}").is_empty());
        assert!(shell("sleep {{ params.n }}; deploy {{ params.env }}").is_empty());
        assert!(shell("echo {{ run.id }} {{ 'literal' }} {{ 3 * 4 }}").is_empty());
        assert_eq!(shell("echo {{ run.error }}"), ["run.error"]);
        let sql = |t| unquoted(t, Language::Sql, &p);
        assert_eq!(
            sql("select * from t where name = '{{ params.db }}'"),
            ["params.db"]
        );
        assert!(
            sql("select {{ params.db | sql_literal }} from {{ params.db | sql_ident }}").is_empty()
        );
        assert_eq!(
            sql("drop database {{ params.db | shell_quote }}"),
            ["params.db | shell_quote"]
        );
    }
}
