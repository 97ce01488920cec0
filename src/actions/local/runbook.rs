//! `runbook`: another runbook run as a child run, with a run log of its own, linked both ways:
//! the child's `run_started` names the calling step (`parent`), and the calling step notes and
//! outputs the child's run id. A later attempt of the step, in this process or after `resume`,
//! resumes that child rather than starting another.
//!
//! The child is the lifeboat binary itself, run as `lifeboat run` / `lifeboat resume` on the same
//! state store: everything a run is (locks, its log, crash safety, orphans ended, signals) comes
//! with it, and nothing here re-implements it.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::actions::{
    ActionError, ActionFuture, ActionSpec, DescribeContext, Exec, Output, When, WithProblem,
    is_template, out,
};

/// Run another runbook as a child run. Its path is relative to the calling runbook's file, and
/// is checked, and its own steps, when the caller is (a cycle of runbooks calling each other
/// is refused). The child runs with its own run log on the same state store; a crash or a retry
/// of this step resumes the same child.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Runbook {
    /// The runbook file, relative to the folder of the runbook that calls it. Written out, not a
    /// template: it is read when the caller is checked.
    pub file: String,
    /// The child's params; values may be templates of the caller's params, items and outputs.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, serde_json::Value>,
}

impl ActionSpec for Runbook {
    const NAME: &'static str = "runbook";
    const SUMMARY: &'static str = "Run another runbook as a child run with its own run log";
    const OUTPUTS: &'static [Output] = &[
        out("run", "the child run's id"),
        out("status", "how the child run ended: `succeeded`"),
        out(
            "file_sha256",
            "SHA-256 of the child runbook as its run started: the version that ran",
        ),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn check(&self) -> Vec<WithProblem> {
        if is_template(&self.file) {
            return vec![WithProblem::new(
                "/file",
                "the file is written out, not a template: it is read when the calling runbook is checked, so that its steps are checked too and a cycle is refused",
            )];
        }
        Vec::new()
    }

    fn describe(&self, _cx: &dyn DescribeContext) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={}", param_text(v)))
            .collect();
        if params.is_empty() {
            format!("run runbook `{}` as a child run", self.file)
        } else {
            format!(
                "run runbook `{}` as a child run with {}",
                self.file,
                params.join(", ")
            )
        }
    }

    /// A later attempt resumes the child the first one started: running the step again is
    /// running the child to its end once.
    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(run(self, cx))
    }
}

/// A param as `-p name=value` takes it: strings as they are, anything else as JSON.
fn param_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A child's progress line without its clock (`04:50:52 ▶ dump`): this run's line has one.
fn without_clock(line: &str) -> &str {
    let b = line.as_bytes();
    let clock = b.len() > 9
        && b[8] == b' '
        && b[2] == b':'
        && b[5] == b':'
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit());
    if clock { &line[9..] } else { line }
}

/// What the step notes once the child exists, before anything else: the link a resume follows.
const CHILD: &str = "child";

async fn run(w: &Runbook, cx: &Exec<'_>) -> Result<serde_json::Value, ActionError> {
    let calls = cx.calls;
    let dir = calls.dir.as_deref().ok_or_else(|| {
        ActionError::permanent(
            "this run does not record its runbook's folder (it was started by an older lifeboat), so `file` cannot be found",
        )
    })?;
    let path = dir.join(&w.file);
    let earlier = (cx.recall)(CHILD);
    let mut cmd = crate::actions::support::process::lifeboat()?;
    let child_id = earlier
        .as_ref()
        .and_then(|c| c.get("run"))
        .and_then(|r| r.as_str())
        .map(String::from);
    match &child_id {
        // The child exists: its own stored copy of the file is what it continues with.
        Some(id) => {
            cmd.args(["resume", id]);
        }
        None => {
            std::fs::metadata(&path).map_err(|e| {
                ActionError::permanent(format!("cannot read runbook {}: {e}", path.display()))
            })?;
            cmd.arg("run").arg(&path);
            cmd.arg("--parent")
                .arg(format!("{}/{}", cx.run_id, cx.step));
            for (k, v) in &w.params {
                cmd.arg("-p").arg(format!("{k}={}", param_text(v)));
            }
        }
    }
    if let Some(state) = &calls.state {
        cmd.args(["--state", state]);
    }
    cmd.arg("--non-interactive");
    if let Some(g) = calls.grace {
        cmd.arg("--grace")
            .arg(format!("{}ms", g.as_millis().max(1)));
    }
    if calls.yes {
        cmd.arg("--yes");
    }
    cmd.env(
        crate::actions::support::process::ATTEMPT_VAR,
        cx.attempt_key,
    )
    .env("NO_COLOR", "1")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| ActionError::permanent(format!("cannot start a child run: {e}")))?;
    let guard = crate::actions::support::process::GroupGuard::new(child.id().map(|p| p as i32));
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ActionError::permanent(
            "the child run's output is not piped",
        ));
    };
    let mut out = tokio::io::BufReader::new(stdout);
    let id = match &child_id {
        Some(id) => id.clone(),
        None => {
            // `lifeboat run` prints the id once the run is recorded: note it before anything
            // else happens, so that a crash from here on resumes this child.
            let mut first = String::new();
            tokio::io::AsyncBufReadExt::read_line(&mut out, &mut first)
                .await
                .map_err(|e| ActionError::permanent(format!("reading the child run's id: {e}")))?;
            let id = first.trim().to_string();
            if !id.is_empty() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                (cx.note)(
                    CHILD,
                    serde_json::json!({
                        "run": id,
                        "file": path.display().to_string(),
                        "file_sha256": crate::runlog::sha256_hex(&bytes),
                    }),
                )
                .await?;
            }
            id
        }
    };
    // The child's progress, line by line, as this step's; the last lines kept for an error.
    let mut kept: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let progress = async {
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
        while let Ok(Some(line)) = lines.next_line().await {
            let line = without_clock(line.trim()).to_string();
            if line.is_empty() {
                continue;
            }
            (cx.progress)(&format!("{id}: {line}"));
            if kept.len() == 20 {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    };
    let drain = async {
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut out, &mut rest).await;
    };
    let (status, (), ()) = tokio::join!(child.wait(), progress, drain);
    let status =
        status.map_err(|e| ActionError::permanent(format!("waiting for the child run: {e}")))?;
    guard.disarm();
    // The child's own summary ("run … failed: step `x` failed: …"), else its last words.
    let tail = kept
        .iter()
        .rev()
        .find(|l| l.contains(" failed: ") || l.contains("error"))
        .or(kept.back())
        .cloned()
        .unwrap_or_default();
    if id.is_empty() {
        return Err(ActionError::permanent(format!(
            "the child run of {} did not start: {tail}",
            path.display()
        )));
    }
    let sha = (cx.recall)(CHILD)
        .and_then(|c| c.get("file_sha256").cloned())
        .unwrap_or(serde_json::Value::Null);
    match status.code() {
        Some(0) => Ok(serde_json::json!({
            "run": id,
            "status": "succeeded",
            "file_sha256": sha,
        })),
        Some(3) => Err(ActionError::permanent(format!(
            "child run {id} waits for an approval: `lifeboat approve {id} STEP` (see `lifeboat show {id}`), then resume this run; {tail}"
        ))),
        // Stopped from outside, or its lock held a moment: the next attempt resumes it.
        Some(130) | Some(4) | Some(5) => Err(ActionError::transient(format!(
            "child run {id} stopped: {tail}"
        ))),
        _ => Err(ActionError::permanent(format!(
            "child run {id} failed: {tail}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_childs_clock_is_dropped_and_other_text_kept() {
        assert_eq!(without_clock("04:50:52 ▶ dump (shell)"), "▶ dump (shell)");
        assert_eq!(without_clock("run x succeeded"), "run x succeeded");
        assert_eq!(without_clock("04:50"), "04:50");
    }

    #[test]
    fn the_file_is_written_out_and_params_are_passed_as_p_takes_them() {
        let w: Runbook = serde_json::from_value(serde_json::json!({
            "file": "{{ params.f }}", "params": {"n": 3, "db": "orders"}
        }))
        .unwrap();
        assert_eq!(w.check().len(), 1);
        assert_eq!(param_text(&w.params["n"]), "3");
        assert_eq!(param_text(&w.params["db"]), "orders");
    }
}
