//! `lifeboat diff OLD NEW`: what a change does to the procedure, for review.

use std::path::Path;

use super::parse_params;
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::plan::{self, diff};
use crate::runbook::{Loaded, load_file, load_str, params};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum DiffFormat {
    Text,
    Markdown,
    Json,
}

pub(super) fn run(old: &str, new: &str, given: &[String], format: DiffFormat) -> Result<Exit> {
    let given = parse_params(given)?;
    let old = planned(old, &given)?;
    let new = planned(new, &given)?;
    let d = diff::diff(&old, &new);
    match format {
        DiffFormat::Text => say!("{}", diff::render_text(&d)),
        DiffFormat::Markdown => out!("{}", diff::render_markdown(&d)),
        DiffFormat::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&d).expect("a diff serializes")
        ),
    }
    Ok(if d.version_problem.is_some() {
        Exit::Failed
    } else {
        Exit::Success
    })
}

/// One side: a file, or `REV:PATH`, the file as git has it at a revision (`HEAD~1:runbooks/x.yaml`,
/// `origin/main:runbooks/x.yaml`), planned with the params given that it declares.
fn planned(side: &str, given: &[(String, String)]) -> Result<plan::Plan> {
    let loaded = if Path::new(side).exists() {
        load_file(Path::new(side))
    } else if let Some((rev, path)) = side.split_once(':') {
        load_str(side, &git_show(rev, path)?)
    } else {
        return Err(Error::Invalid(format!(
            "{side} is neither a file nor REV:PATH (a file at a git revision, e.g. HEAD~1:{side})"
        )));
    };
    let Loaded { source, result } = loaded;
    let rb = match result {
        Ok(rb) => rb,
        Err(d) => return Err(Error::runbook(source, d)),
    };
    // A param one side does not declare (added or removed by the change) is the other's alone.
    let mine: Vec<(String, String)> = given
        .iter()
        .filter(|(k, _)| rb.params.contains_key(k))
        .cloned()
        .collect();
    let values = match params::resolve(&rb, &mine, true) {
        Ok(v) => v,
        Err(d) => return Err(Error::runbook(source, d)),
    };
    plan::build(&rb, &values).map_err(|d| Error::runbook(source, d))
}

/// The file at a revision, read with `git show` from the current folder (`./` keeps a relative
/// path relative to here, as the user typed it).
fn git_show(rev: &str, path: &str) -> Result<String> {
    let spec = if path.starts_with('/') || path.starts_with("./") {
        format!("{rev}:{path}")
    } else {
        format!("{rev}:./{path}")
    };
    let out = crate::actions::support::process::command("git")
        .args(["show", "--no-textconv", &spec])
        .output()
        .map_err(|e| Error::Invalid(format!("cannot run git to read {rev}:{path}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "git cannot show {rev}:{path}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| Error::Invalid(format!("{rev}:{path} is not UTF-8 text")))
}
