//! File to [`ValidRunbook`]: read, parse, schema, semantic checks.

use std::path::Path;

use super::{Source, ValidRunbook, source, validate};
use crate::diagnostics::Diagnostic;

/// A file and what came of it. The source is kept so diagnostics can be rendered against it.
#[derive(Debug)]
pub struct Loaded {
    pub source: Source,
    pub result: Result<ValidRunbook, Vec<Diagnostic>>,
}

pub fn load_file(path: &Path) -> Loaded {
    let mut loaded = match source::read(path) {
        Ok(src) => finish(src),
        Err((source, d)) => Loaded {
            source,
            result: Err(vec![d]),
        },
    };
    if let Ok(rb) = &loaded.result {
        let mut chain = vec![std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())];
        let problems = calls(path, rb, &mut chain);
        if !problems.is_empty() {
            loaded.result = Err(problems);
        }
    }
    loaded
}

/// How deep runbooks may call runbooks: a platform's procedure of components' procedures is
/// two or three levels, and a deeper chain is more likely a mistake than a design.
pub const MAX_CALL_DEPTH: usize = 8;

/// The runbooks `rb` (read from `path`) calls with `action: runbook`, each read and checked in
/// turn, as deep as they go: one that cannot be read, is invalid, or calls back into `chain`
/// (a cycle) is an error at the step's `file`.
fn calls(path: &Path, rb: &ValidRunbook, chain: &mut Vec<std::path::PathBuf>) -> Vec<Diagnostic> {
    use crate::diagnostics::{At, Code, ptr};
    let mut out = Vec::new();
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut seen = std::collections::HashSet::new();
    for step in &rb.steps {
        let crate::actions::Action::Runbook(r) = &step.action else {
            continue;
        };
        if !seen.insert(step.at.clone()) {
            continue;
        }
        let at = At::node(ptr(&ptr(&step.at, "with"), "file"));
        let child = dir.join(&r.file);
        let canonical = match std::fs::canonicalize(&child) {
            Ok(c) => c,
            Err(e) => {
                out.push(
                    Diagnostic::new(
                        Code::CalledRunbook,
                        at,
                        format!(
                            "step `{}` runs {}, which cannot be read: {e}",
                            step.id,
                            child.display()
                        ),
                    )
                    .help("`file` is relative to the folder of the runbook that calls it"),
                );
                continue;
            }
        };
        if let Some(start) = chain.iter().position(|c| *c == canonical) {
            let names: Vec<String> = chain[start..]
                .iter()
                .chain([&canonical])
                .map(|p| {
                    p.file_name().map_or_else(
                        || p.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    )
                })
                .collect();
            out.push(
                Diagnostic::new(
                    Code::CalledRunbook,
                    at,
                    format!(
                        "runbooks call each other in a cycle: {}",
                        names.join(" -> ")
                    ),
                )
                .help("a runbook that runs itself, directly or through others, would never end"),
            );
            continue;
        }
        if chain.len() >= MAX_CALL_DEPTH {
            out.push(Diagnostic::new(
                Code::CalledRunbook,
                at,
                format!("runbooks call runbooks more than {MAX_CALL_DEPTH} deep here"),
            ));
            continue;
        }
        let loaded = match source::read(&child) {
            Ok(src) => finish(src),
            Err((source, d)) => Loaded {
                source,
                result: Err(vec![d]),
            },
        };
        match &loaded.result {
            Err(diags) => {
                let first = diags
                    .iter()
                    .find(|d| !d.code.is_warning())
                    .or(diags.first());
                out.push(
                    Diagnostic::new(
                        Code::CalledRunbook,
                        at,
                        format!(
                            "step `{}` runs {}, which is not a valid runbook ({} problem(s)){}",
                            step.id,
                            child.display(),
                            diags.len(),
                            first
                                .map(|d| format!("; the first: {}", d.message))
                                .unwrap_or_default()
                        ),
                    )
                    .help(format!(
                        "`lifeboat validate {}` shows them all",
                        child.display()
                    )),
                );
            }
            Ok(child_rb) => {
                for name in r.params.keys() {
                    if !child_rb.params.contains_key(name) {
                        out.push(
                            Diagnostic::new(
                                Code::CalledRunbook,
                                At::key(ptr(&ptr(&ptr(&step.at, "with"), "params"), name)),
                                format!("runbook `{}` has no param `{name}`", child_rb.name),
                            )
                            .help_opt(
                                crate::diagnostics::did_you_mean(
                                    name,
                                    child_rb.params.keys().map(String::as_str),
                                ),
                            ),
                        );
                    }
                }
                for (name, p) in &child_rb.params {
                    let required = p.required.unwrap_or(p.default.is_none());
                    if required && !r.params.contains_key(name) {
                        out.push(Diagnostic::new(
                            Code::CalledRunbook,
                            At::node(ptr(&step.at, "with")),
                            format!(
                                "runbook `{}` needs param `{name}`, and step `{}` does not give it",
                                child_rb.name, step.id
                            ),
                        ));
                    }
                }
                chain.push(canonical);
                let deeper = calls(&child, child_rb, chain);
                chain.pop();
                if let Some(d) = deeper.into_iter().next() {
                    out.push(Diagnostic::new(
                        Code::CalledRunbook,
                        at,
                        format!("step `{}` runs {}: {}", step.id, child.display(), d.message),
                    ));
                }
            }
        }
    }
    out
}

/// For tests and benchmarks: a runbook from memory, named `name` in diagnostics.
pub fn load_str(name: &str, text: &str) -> Loaded {
    if text.len() > source::MAX_FILE_BYTES {
        return Loaded {
            source: Source::new(Path::new(name), String::new()),
            result: Err(vec![Diagnostic::new(
                crate::diagnostics::Code::InputLimit,
                crate::diagnostics::At::File,
                format!(
                    "the text is {} bytes; a runbook may be at most {} bytes",
                    text.len(),
                    source::MAX_FILE_BYTES
                ),
            )]),
        };
    }
    finish(Source::new(Path::new(name), text.to_string()))
}

fn finish(mut src: Source) -> Loaded {
    let result = match source::parse(&mut src) {
        Ok(value) => validate::validate(&value),
        Err(d) => Err(vec![d]),
    };
    Loaded {
        source: src,
        result,
    }
}
