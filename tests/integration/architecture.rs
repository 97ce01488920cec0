//! The invariants of ARCHITECTURE.md that a scan of the source can check.

use std::path::{Path, PathBuf};

use crate::common;

/// Every `.rs` file under `src/<dir>` (or the file `src/<dir>` itself).
fn sources(dir: &str) -> Vec<PathBuf> {
    let root = common::root().join("src").join(dir);
    if root.is_file() {
        return vec![root];
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    assert!(!out.is_empty(), "src/{dir} has sources");
    out
}

/// Lines of code (comments left out) in `files` that contain any of `words`.
fn offending(files: &[PathBuf], words: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if let Some(w) = words.iter().find(|w| code.contains(*w)) {
                let rel = f.strip_prefix(common::root()).unwrap_or(Path::new(""));
                found.push(format!("{}:{}: `{w}`", rel.display(), n + 1));
            }
        }
    }
    found
}

/// Validation and planning are functions of the file and the params: no network, no
/// environment, no secrets, no runtime.
#[test]
fn validation_planning_and_reports_are_pure() {
    let files: Vec<PathBuf> = ["runbook", "plan", "drill", "diagnostics", "metrics.rs"]
        .iter()
        .flat_map(|d| sources(d))
        .collect();
    let found = offending(
        &files,
        &[
            "tokio",
            "reqwest",
            "std::env",
            "env::var",
            "std::net",
            "secrets::resolve",
        ],
    );
    assert!(
        found.is_empty(),
        "impure code where ARCHITECTURE.md says there is none:\n{}",
        found.join("\n")
    );
}

/// The types a runbook is read into keep every error's location: no serde attribute that
/// buffers input.
#[test]
fn the_runbook_is_read_without_flatten_or_untagged() {
    let files: Vec<PathBuf> = ["runbook", "actions"]
        .iter()
        .flat_map(|d| sources(d))
        .collect();
    let found = offending(&files, &["serde(flatten", "serde(untagged", "typetag"]);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// Every child process is made by `actions::support::process::command`, which keeps this
/// process's secrets out of its environment (tests excepted).
#[test]
fn every_child_process_is_made_where_secrets_are_kept_from_it() {
    let mut found = Vec::new();
    for f in sources("") {
        let rel = f
            .strip_prefix(common::root())
            .unwrap()
            .display()
            .to_string();
        if rel == "src/actions/support/process.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        for (n, line) in code.lines().enumerate() {
            if line.contains("Command::new(") {
                found.push(format!("{rel}:{}", n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "use actions::support::process::command():\n{}",
        found.join("\n")
    );
}
