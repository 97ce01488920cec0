//! `shell`: run a command (argv) or a script, capturing its output.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::actions::{
    ActionError, ActionFuture, ActionSpec, DescribeContext, Exec, Language, Output, When,
    WithProblem, out,
};

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
    /// Whether running it twice does no more than running it once. When true, an attempt cut
    /// short by a crash is run again on `resume` without asking. Assumed false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// Cap on captured stdout and stderr, each, in bytes (default 1 MiB); the rest is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_limit: Option<u64>,
}

/// Programs whose `-c` argument is a script.
const SHELLS: &[&str] = &["sh", "bash", "dash", "zsh", "ksh", "ash", "busybox"];

impl ActionSpec for Shell {
    const NAME: &'static str = "shell";
    const SUMMARY: &'static str = "Run a local command or script and capture its output";
    const OUTPUTS: &'static [Output] = &[
        out("exit_code", "the process's exit status"),
        out("stdout", "standard output, up to capture_limit bytes"),
        out("stderr", "standard error, up to capture_limit bytes"),
        out(
            "truncated",
            "whether either stream was longer than capture_limit",
        ),
    ];
    const READ_ONLY: When<Self> = When::If {
        what: "with `changes: false`",
        test: |a| a.changes == Some(false),
    };
    const DESTRUCTIVE: When<Self> = When::If {
        what: "unless `changes: false`",
        test: |a| a.changes != Some(false),
    };
    const RUNNABLE: bool = true;

    fn idempotent(&self) -> bool {
        self.changes == Some(false) || self.idempotent == Some(true)
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(run(self, cx))
    }

    fn code(&self) -> Vec<(String, Language)> {
        let mut code = Vec::new();
        if self.script.is_some() {
            code.push(("/script".into(), Language::Shell));
        }
        // `argv: [sh, -c, SCRIPT, ...]` is a script too.
        if let Some(argv) = &self.argv
            && let [shell, flag, ..] = argv.as_slice()
            && SHELLS.contains(&shell.rsplit('/').next().unwrap_or(shell))
            && flag.starts_with('-')
            && flag.contains('c')
        {
            code.push(("/argv/2".into(), Language::Shell));
        }
        code
    }
    fn check(&self) -> Vec<WithProblem> {
        match (&self.argv, &self.script) {
            (Some(a), None) if a.is_empty() => vec![WithProblem::new(
                "/argv",
                "`argv` needs at least the program",
            )],
            (Some(_), None) | (None, Some(_)) => vec![],
            (Some(_), Some(_)) => vec![WithProblem::new("", "give `argv` or `script`, not both")],
            (None, None) => vec![WithProblem::new(
                "",
                "give the command as `argv` or `script`",
            )],
        }
    }
    fn describe(&self, _: &dyn DescribeContext) -> String {
        let what = match (&self.argv, &self.script) {
            (Some(argv), _) => format!(
                "run {}",
                argv.iter()
                    .map(|a| shell_quote(a))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            (None, Some(s)) => {
                let first = s.lines().next().unwrap_or("");
                let more = s.lines().count().saturating_sub(1);
                let by = self.shell.as_deref().unwrap_or("sh");
                if more > 0 {
                    format!("run a {by} script: {first} (+{more} lines)")
                } else {
                    format!("run `{first}` with {by}")
                }
            }
            (None, None) => "run nothing".into(),
        };
        match &self.cwd {
            Some(cwd) => format!("{what} in {cwd}"),
            None => what,
        }
    }
}

const DEFAULT_CAPTURE: u64 = 1024 * 1024;

/// Exit statuses that say the command could not be run at all: trying again cannot help.
const NOT_RUNNABLE: &[i32] = &[126, 127];

async fn run(w: &Shell, cx: &Exec<'_>) -> Result<serde_json::Value, ActionError> {
    use crate::actions::support::process::command;
    use tokio::io::AsyncReadExt;
    let mut cmd = match (&w.argv, &w.script) {
        (Some(argv), _) if !argv.is_empty() => {
            let mut c = tokio::process::Command::from(command(&argv[0]));
            c.args(&argv[1..]);
            c
        }
        (None, Some(script)) => {
            let mut c = tokio::process::Command::from(command(w.shell.as_deref().unwrap_or("sh")));
            c.arg("-c").arg(script);
            c
        }
        _ => return Err(ActionError::permanent("no command to run")),
    };
    cmd.envs(&w.env)
        .env("LIFEBOAT_RUN_ID", cx.run_id)
        .env("LIFEBOAT_STEP", cx.step)
        .env(
            crate::actions::support::process::ATTEMPT_VAR,
            cx.attempt_key,
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own process group, so a timeout or a cancel reaches everything it started.
        .process_group(0);
    if let Some(cwd) = &w.cwd {
        cmd.current_dir(cwd);
    }
    let program = w.argv.as_ref().and_then(|a| a.first()).map_or_else(
        || w.shell.clone().unwrap_or_else(|| "sh".into()),
        Clone::clone,
    );
    let mut child = cmd
        .spawn()
        .map_err(|e| ActionError::permanent(format!("cannot start `{program}`: {e}")))?;
    let guard = crate::actions::support::process::GroupGuard::new(child.id().map(|p| p as i32));
    let limit = w.capture_limit.unwrap_or(DEFAULT_CAPTURE);
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let read_capped = |mut r: Box<dyn tokio::io::AsyncRead + Unpin + Send>| async move {
        let mut kept = Vec::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            total += n as u64;
            let room = limit.saturating_sub(kept.len() as u64) as usize;
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        Ok::<_, std::io::Error>((kept, total > limit))
    };
    let (out, err, status) = tokio::join!(
        read_capped(Box::new(&mut stdout)),
        read_capped(Box::new(&mut stderr)),
        child.wait()
    );
    let status =
        status.map_err(|e| ActionError::transient(format!("waiting for `{program}`: {e}")))?;
    guard.disarm();
    let (out, out_cut) = out.map_err(|e| ActionError::transient(format!("reading stdout: {e}")))?;
    let (err, err_cut) = err.map_err(|e| ActionError::transient(format!("reading stderr: {e}")))?;
    let stdout = String::from_utf8_lossy(&out).into_owned();
    let stderr = String::from_utf8_lossy(&err).into_owned();
    match status.code() {
        Some(0) => Ok(serde_json::json!({
            "exit_code": 0,
            "stdout": stdout,
            "stderr": stderr,
            "truncated": out_cut || err_cut,
        })),
        Some(code) => {
            let tail = last_chars(stderr.trim_end(), 400);
            let why = if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            };
            let msg = format!("`{program}` exited with status {code}{why}");
            let mut e = if NOT_RUNNABLE.contains(&code) {
                ActionError::permanent(msg)
            } else {
                ActionError::transient(msg)
            };
            e.exit_code = Some(code);
            Err(e)
        }
        None => {
            use std::os::unix::process::ExitStatusExt;
            Err(ActionError::transient(format!(
                "`{program}` was killed by signal {}",
                status.signal().unwrap_or(0)
            )))
        }
    }
}

fn last_chars(s: &str, n: usize) -> &str {
    match s.char_indices().rev().nth(n) {
        Some((i, _)) => &s[i..],
        None => s,
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
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
        assert_eq!(
            parse::<Shell>(json!({"argv": ["x"], "script": "y"}))
                .check()
                .len(),
            1
        );
        assert!(
            parse::<Shell>(json!({"script": "echo hi"}))
                .check()
                .is_empty()
        );
        assert!(parse::<Shell>(json!({"script": "echo hi"})).destructive());
        assert!(!parse::<Shell>(json!({"script": "echo hi", "changes": false})).destructive());
    }

    #[test]
    fn unknown_field_is_rejected() {
        assert!(reject::<Shell>(json!({"command": "ls"})).contains("unknown field `command`"));
    }
}
