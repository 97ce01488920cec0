#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every YAML file under `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Diagnostics of a file rendered as the CLI prints them, paths relative to the repo.
pub fn rendered(path: &Path) -> String {
    let rel = path.strip_prefix(root()).unwrap_or(path);
    let loaded = lifeboat::runbook::load_file(rel);
    let Err(diags) = loaded.result else {
        return String::from("(valid)");
    };
    let mut placed: Vec<_> = diags
        .iter()
        .map(|d| (lifeboat::diagnostics::Rendered::new(&loaded.source, d), d))
        .collect();
    placed.sort_by_key(|(r, d)| (r.line, r.column, d.code));
    placed
        .iter()
        .map(|(_, d)| lifeboat::diagnostics::render(&loaded.source, d, false))
        .collect()
}
pub mod kube;
pub mod pg;
pub mod s3;
pub mod sandbox;
