//! `lifeboat validate PATH...`

use std::path::{Path, PathBuf};

use super::{DiagnosticFormat, color, parse_params};
use crate::diagnostics::{Diagnostic, render, render_json};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::runbook::{Source, load_file, params};

/// Exit 2 when a runbook has problems: they are the command's findings, printed as diagnostics.
pub(super) fn run(paths: &[PathBuf], given: &[String], format: DiagnosticFormat) -> Result<Exit> {
    let given = parse_params(given)?;
    let mut files = Vec::new();
    let mut not_runbooks = 0usize;
    for p in paths {
        if p.is_dir() {
            match collect(p, &mut files, &mut not_runbooks) {
                Ok(()) => {}
                Err(e) => {
                    errln!(
                        "{}: error[LB0005]: cannot read the folder: {e}",
                        p.display()
                    );
                    return Ok(Exit::Invalid);
                }
            }
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        return Err(Error::Invalid(format!(
            "no runbooks found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let (mut bad_files, mut problems, mut warnings) = (0usize, 0usize, 0usize);
    for f in &files {
        let loaded = load_file(f);
        let diags: Vec<Diagnostic> = match &loaded.result {
            // What `plan` and `run` would refuse with these params (or the defaults): rendered
            // the same way, so that validate never passes what they refuse. Without values for
            // every required param there is nothing to render yet.
            Ok(rb) => match params::resolve(rb, &given, true) {
                Ok(values) => crate::plan::build(rb, &values).err().unwrap_or_default(),
                Err(d) if !given.is_empty() => d,
                Err(_) => Vec::new(),
            },
            Err(d) => d.clone(),
        };
        if let Ok(rb) = &loaded.result
            && diags.is_empty()
        {
            warnings += rb.warnings.len();
            print(&loaded.source, rb.warnings.clone(), format);
        }
        if diags.is_empty() {
            if let (Ok(rb), DiagnosticFormat::Human) = (&loaded.result, format) {
                let scenarios = rb.drill.as_ref().map_or(0, |d| d.scenarios.len());
                errln!(
                    "ok: {} ({} {}, {} steps{})",
                    loaded.source.name,
                    rb.name,
                    rb.version,
                    rb.steps.len(),
                    match scenarios {
                        0 => String::new(),
                        1 => ", 1 drill scenario".into(),
                        n => format!(", {n} drill scenarios"),
                    }
                );
            }
            continue;
        }
        bad_files += 1;
        problems += diags.len();
        print(&loaded.source, diags, format);
    }
    if let DiagnosticFormat::Human = format {
        let skipped = if not_runbooks > 0 {
            format!("; skipped {not_runbooks} YAML file(s) that are not runbooks")
        } else {
            String::new()
        };
        let warned = match warnings {
            0 => String::new(),
            n => format!("; {n} warning(s)"),
        };
        if bad_files == 0 {
            errln!("{} runbook(s) valid{warned}{skipped}", files.len());
        } else {
            errln!(
                "{problems} problem(s) in {bad_files} of {} runbook(s){skipped}",
                files.len()
            );
        }
    }
    Ok(if bad_files == 0 {
        Exit::Success
    } else {
        Exit::Invalid
    })
}

/// A valid runbook's warnings, on stderr, before `plan` or `run` goes on.
pub(super) fn warn(src: &Source, rb: &crate::runbook::ValidRunbook) {
    print(src, rb.warnings.clone(), DiagnosticFormat::Human);
}

/// Prints diagnostics in file order.
pub(super) fn print(src: &Source, mut diags: Vec<Diagnostic>, format: DiagnosticFormat) {
    let mut rendered: Vec<(usize, usize, Diagnostic)> = diags
        .drain(..)
        .map(|d| {
            let r = crate::diagnostics::Rendered::new(src, &d);
            (r.line, r.column, d)
        })
        .collect();
    rendered.sort_by_key(|(l, c, d)| (*l, *c, d.code));
    for (_, _, d) in rendered {
        match format {
            DiagnosticFormat::Human => err_raw!("{}", render(src, &d, color())),
            DiagnosticFormat::Json => outln!("{}", render_json(src, &d)),
        }
    }
}

/// Runbooks in a folder, recursively: YAML files that declare themselves runbooks. Other YAML
/// (Kubernetes manifests beside the runbooks, CI files) is counted, not checked.
fn collect(dir: &Path, out: &mut Vec<PathBuf>, others: &mut usize) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let path = e.path();
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if e.file_type()?.is_dir() {
            collect(&path, out, others)?;
        } else if matches!(
            path.extension().and_then(|x| x.to_str()),
            Some("yaml" | "yml")
        ) {
            if looks_like_runbook(&path) {
                out.push(path);
            } else {
                *others += 1;
            }
        }
    }
    Ok(())
}

fn looks_like_runbook(path: &Path) -> bool {
    use std::io::Read;
    let mut head = String::new();
    let Ok(f) = std::fs::File::open(path) else {
        return true;
    };
    // Unreadable or binary files are runbooks as far as this check goes: `validate` will say why.
    if f.take(64 * 1024).read_to_string(&mut head).is_err() {
        return true;
    }
    head.lines().any(|l| {
        let l = l.trim_end();
        l.starts_with("apiVersion: lifeboat/")
            || l.starts_with("apiVersion: \"lifeboat/")
            || l == "kind: Runbook"
    })
}
