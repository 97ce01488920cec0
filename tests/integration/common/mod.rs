#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The OS account the tests run as: who the folder store says approves.
pub fn os_account() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

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
pub mod dns;
pub mod kube;
pub mod neo4j;
pub mod pg;
pub mod pgbackrest;
pub mod s3;
pub mod sandbox;
pub mod small_disk;

/// A test service started by one of the scripts/ (`SCRIPT start DIR ARGS...`): its folder, the
/// port it wrote to DIR/port, and the temporary folder holding DIR, removed when dropped.
pub struct Started {
    pub dir: PathBuf,
    pub port: u16,
    pub tmp: tempfile::TempDir,
}

/// Starts a service, trying three times on fresh folders (and so fresh ports): a free port the
/// script chose can be taken by a parallel test before the server binds it.
pub fn start_service(script: &str, args: &[&str], env: &[(&str, &str)]) -> Started {
    let mut last = String::new();
    for _ in 0..3 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("svc");
        let out = std::process::Command::new(root().join("scripts").join(script))
            .arg("start")
            .arg(&dir)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        if out.status.success() {
            let port = std::fs::read_to_string(dir.join("port"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            return Started { dir, port, tmp };
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        stop_service(script, &dir);
    }
    panic!("{script} start failed three times: {last}");
}

pub fn stop_service(script: &str, dir: &Path) {
    let _ = std::process::Command::new(root().join("scripts").join(script))
        .arg("stop")
        .arg(dir)
        .output();
}
