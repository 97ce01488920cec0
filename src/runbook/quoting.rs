//! Filters that quote a value for the language it is pasted into, so a param or an output
//! cannot become code: `shell_quote` for a shell script, `sql_literal` and `sql_ident` for SQL.
//! Runbooks should prefer forms that need no quoting (a `shell` step's `argv`, a query's bind
//! params); these are for where text must be spliced.

use minijinja::{Error, ErrorKind, Value};

fn text(value: &Value, what: &str) -> Result<String, Error> {
    let s = match value.as_str() {
        Some(s) => s.to_string(),
        None if value.is_number() || value.kind() == minijinja::value::ValueKind::Bool => {
            value.to_string()
        }
        None => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "{what} quotes text, numbers and booleans, not {}",
                    value.kind()
                ),
            ));
        }
    };
    if s.contains('\0') {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{what}: the value holds a NUL byte, which no shell or SQL text can carry"),
        ));
    }
    Ok(s)
}

/// `{{ x | shell_quote }}`: one POSIX shell word, whatever `x` holds.
pub fn shell_quote(value: &Value) -> Result<String, Error> {
    let s = text(value, "shell_quote")?;
    Ok(format!("'{}'", s.replace('\'', r"'\''")))
}

/// `{{ x | sql_literal }}`: a PostgreSQL string literal, right whatever
/// `standard_conforming_strings` is (a backslash makes it an escape string, `E'…'`).
pub fn sql_literal(value: &Value) -> Result<String, Error> {
    let s = text(value, "sql_literal")?;
    let quoted = s.replace('\'', "''");
    Ok(if s.contains('\\') {
        format!("E'{}'", quoted.replace('\\', r"\\"))
    } else {
        format!("'{quoted}'")
    })
}

/// `{{ x | sql_ident }}`: a PostgreSQL identifier (a table, a database, a role), quoted.
pub fn sql_ident(value: &Value) -> Result<String, Error> {
    let s = text(value, "sql_ident")?;
    if s.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "sql_ident: an identifier cannot be empty",
        ));
    }
    Ok(format!("\"{}\"", s.replace('"', "\"\"")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each hostile value, quoted, is one word of the shell: it comes back out as it went in.
    #[test]
    fn shell_quote_makes_one_word_of_anything() {
        for v in [
            "plain",
            "it's",
            "'; rm -rf / #",
            "$(id)`id`${HOME}",
            "a b\tc\nd",
            "\\'\\\"",
            "--option",
            "",
            "ünï 🔑",
        ] {
            let quoted = shell_quote(&Value::from(v)).unwrap();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {quoted}"))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), v, "{quoted}");
        }
        assert_eq!(shell_quote(&Value::from(42)).unwrap(), "'42'");
        assert!(shell_quote(&Value::from("a\0b")).is_err());
    }

    #[test]
    fn sql_quoting() {
        assert_eq!(sql_literal(&Value::from("it's")).unwrap(), "'it''s'");
        assert_eq!(sql_literal(&Value::from(r"a\'b")).unwrap(), r"E'a\\''b'");
        assert_eq!(
            sql_ident(&Value::from("Orders \"x\"")).unwrap(),
            "\"Orders \"\"x\"\"\""
        );
        assert!(sql_ident(&Value::from("")).is_err());
        assert!(sql_literal(&Value::from("a\0")).is_err());
    }
}
