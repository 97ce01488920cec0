//! `shell`: run a command (argv) or a script, capturing its output.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, DescribeContext, Effect, Output, WithProblem, out};

/// Run a local command. Give `argv` (no shell involved) or `script` (run by `sh -c`, or `shell`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Shell {
    /// Program and arguments, run directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// A script, run by the `shell` interpreter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// Interpreter for `script`; `sh` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Whether the command changes anything. Assumed true: lifeboat cannot know what a script does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<bool>,
    /// Cap on captured stdout and stderr, each, in bytes (default 1 MiB); the rest is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_limit: Option<u64>,
}

impl ActionSpec for Shell {
    const NAME: &'static str = "shell";
    const SUMMARY: &'static str = "Run a local command or script and capture its output";
    const OUTPUTS: &'static [Output] = &[
        out("exit_code", "the process's exit status"),
        out("stdout", "standard output, up to capture_limit bytes"),
        out("stderr", "standard error, up to capture_limit bytes"),
    ];

    fn effect(&self) -> Effect {
        if self.changes == Some(false) { Effect::ReadOnly } else { Effect::Changes }
    }
    fn destructive(&self) -> bool {
        self.changes != Some(false)
    }
    fn check(&self) -> Vec<WithProblem> {
        match (&self.argv, &self.script) {
            (Some(a), None) if a.is_empty() => vec![WithProblem::new("/argv", "`argv` needs at least the program")],
            (Some(_), None) | (None, Some(_)) => vec![],
            (Some(_), Some(_)) => vec![WithProblem::new("", "give `argv` or `script`, not both")],
            (None, None) => vec![WithProblem::new("", "give the command as `argv` or `script`")],
        }
    }
    fn describe(&self, _: &dyn DescribeContext) -> String {
        let what = match (&self.argv, &self.script) {
            (Some(argv), _) => format!("run {}", argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")),
            (None, Some(s)) => {
                let first = s.lines().next().unwrap_or("");
                let more = s.lines().count().saturating_sub(1);
                let by = self.shell.as_deref().unwrap_or("sh");
                if more > 0 { format!("run a {by} script: {first} (+{more} lines)") } else { format!("run `{first}` with {by}") }
            }
            (None, None) => "run nothing".into(),
        };
        match &self.cwd {
            Some(cwd) => format!("{what} in {cwd}"),
            None => what,
        }
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_argv_quoted() {
        let d = describe::<Shell>(json!({"argv": ["pg_isready", "-h", "db one"], "cwd": "/srv"}));
        assert_eq!(d, "run pg_isready -h 'db one' in /srv");
    }

    #[test]
    fn needs_exactly_one_form() {
        assert_eq!(parse::<Shell>(json!({})).check().len(), 1);
        assert_eq!(parse::<Shell>(json!({"argv": ["x"], "script": "y"})).check().len(), 1);
        assert!(parse::<Shell>(json!({"script": "echo hi"})).check().is_empty());
        assert!(parse::<Shell>(json!({"script": "echo hi"})).destructive());
        assert!(!parse::<Shell>(json!({"script": "echo hi", "changes": false})).destructive());
    }

    #[test]
    fn unknown_field_is_rejected() {
        assert!(reject::<Shell>(json!({"command": "ls"})).contains("unknown field `command`"));
    }
}
