//! files.backup and files.restore against the real S3 gateway: a directory goes up as one tar
//! stream and comes back whole, or not at all.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common;

use common::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use common::sandbox::{Sandbox, runbook};

const SECRETS: &str = "secrets:\n  s3_key: {env: LB_S3_KEY}\n  s3_secret: {env: LB_S3_SECRET}\n  pass: {env: LB_PASS}\n";
const PASS: &str = "files-passphrase-Zq9";

fn run(sb: &Sandbox, file: &str) -> common::sandbox::Ran {
    sb.lifeboat_env(
        &["run", file],
        &[
            ("LB_S3_KEY", ACCESS_KEY),
            ("LB_S3_SECRET", SECRET_KEY),
            ("LB_PASS", PASS),
        ],
    )
}

/// A vector index's folder as a test makes it: metadata, a large binary part (more than one
/// upload part), an empty file, a read-only directory, a symlink, names tar needs its long
/// forms for.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("vectors")).unwrap();
    std::fs::write(
        root.join("meta.json"),
        r#"{"documents": 3, "dimensions": 384}"#,
    )
    .unwrap();
    // 20 MiB that zstd cannot shrink much: an xorshift stream.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let big: Vec<u8> = (0..20 * 1024 * 1024 / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(root.join("vectors/part-0.bin"), &big).unwrap();
    std::fs::write(root.join("vectors/empty"), b"").unwrap();
    let deep = root.join(format!("{}/{}", "d".repeat(90), "é".repeat(40)));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join(format!("{}.txt", "n".repeat(120))), "long").unwrap();
    std::fs::create_dir(root.join("ro")).unwrap();
    std::fs::write(root.join("ro/secret.key"), "k").unwrap();
    std::fs::set_permissions(root.join("ro/secret.key"), PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::set_permissions(root.join("ro"), PermissionsExt::from_mode(0o555)).unwrap();
    std::os::unix::fs::symlink("vectors/part-0.bin", root.join("latest")).unwrap();
}

/// What a tree holds, for comparing two: per path, its kind, mode, contents (or link target)
/// and a file's modification time.
fn tree(root: &Path) -> BTreeMap<String, (String, u32, Vec<u8>, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mode = m.permissions().mode() & 0o7777;
            let entry = if m.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                ("link".into(), 0, t.display().to_string().into_bytes(), 0)
            } else if m.is_dir() {
                stack.push(p.clone());
                ("dir".into(), mode, Vec::new(), 0)
            } else {
                ("file".into(), mode, std::fs::read(&p).unwrap(), m.mtime())
            };
            out.insert(rel, entry);
        }
    }
    out
}

/// No `.NAME.lifeboat-*` folder is left beside the target.
fn no_leftovers(parent: &Path) {
    let left: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".lifeboat-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn unlock(root: &Path) {
    // tempfile cannot remove a read-only directory's files.
    for dir in [root.join("src/ro"), root.join("dst/ro")] {
        let _ = std::fs::set_permissions(dir, PermissionsExt::from_mode(0o755));
    }
}

/// An encrypted backup of a tree with every kind of entry restores over an existing directory
/// exactly: contents, modes, links, times; the old contents are gone, nothing is left beside
/// it, and the metadata file comes back as outputs on both sides.
#[test]
fn a_directory_round_trips_exactly_and_replaces_the_old_one() {
    let s3 = S3Server::start(&["backups"]);
    let sb = Sandbox::new();
    make_tree(&sb.path("src"));
    std::fs::create_dir(sb.path("dst")).unwrap();
    std::fs::write(sb.path("dst/stale.txt"), "from before").unwrap();
    let connections = format!("connections:\n{}", s3.connection("backups", "backups"));
    sb.write(
        "r.yaml",
        &runbook(
            "files-round-trip",
            &format!(
                "{SECRETS}{connections}steps:\n  - {{id: backup, action: files.backup, with: {{path: src, metadata: meta.json, to: {{connection: backups, key: index/1.tar.zst.age}}, encrypt: {{passphrase: \"{{{{ secrets.pass }}}}\"}}}}}}\n  - {{id: restore, action: files.restore, needs: [backup], with: {{path: dst, from: {{connection: backups, key: index/1.tar.zst.age}}, decrypt_with: \"{{{{ secrets.pass }}}}\"}}}}\n"
            ),
        ),
    );
    // Progress reported as often as it comes, to see it on a transfer this small.
    let r = sb.lifeboat_env(
        &["run", "r.yaml"],
        &[
            ("LB_S3_KEY", ACCESS_KEY),
            ("LB_S3_SECRET", SECRET_KEY),
            ("LB_PASS", PASS),
            ("LIFEBOAT_PROGRESS_EVERY", "1ms"),
        ],
    );
    unlock(sb.dir.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id = r.run_id();
    let progress = |step: &str| -> Vec<String> {
        sb.events(&id)
            .iter()
            .filter(|e| e["event"] == "step_progress" && e["step"] == step)
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    let up = progress("backup");
    assert!(
        up.iter()
            .any(|m| m.starts_with("uploaded ") && m.ends_with("/s")),
        "{up:?}"
    );
    let down = progress("restore");
    assert!(
        down.iter()
            .any(|m| m.starts_with("downloaded ") && m.contains(" of ") && m.contains("%)")),
        "{down:?}"
    );
    assert!(
        r.stderr.contains("downloaded "),
        "the live view shows it: {}",
        r.stderr
    );
    let b = sb.outputs(&id, "backup");
    assert_eq!(
        (&b["files"], &b["directories"], &b["symlinks"]),
        (&5.into(), &4.into(), &1.into()),
        "{b}"
    );
    let meta = std::fs::metadata(sb.path("src/meta.json")).unwrap().len();
    assert_eq!(b["bytes"], 20 * 1024 * 1024 + meta + 4 + 1);
    assert_eq!(b["metadata"]["documents"], 3);
    assert!(b["size"].as_u64().unwrap() > 20 * 1024 * 1024, "{b}");
    let rst = sb.outputs(&id, "restore");
    for k in ["files", "directories", "symlinks", "bytes", "metadata"] {
        assert_eq!(rst[k], b[k], "{k}");
    }
    assert_eq!(rst["consistent_at"], b["consistent_at"]);
    assert_eq!(rst["previous"], serde_json::Value::Null);
    assert_eq!(tree(&sb.path("dst")), tree(&sb.path("src")));
    assert!(!sb.path("dst/stale.txt").exists());
    no_leftovers(sb.dir.path());
    let log = sb.read(&format!(".lifeboat/runs/{id}/log.jsonl"));
    assert!(!log.contains(PASS));
}

/// A restore that cannot be verified leaves the directory as it was and nothing beside it: a
/// manifest whose counts the backup does not meet, an object that is not the one the manifest
/// hashed, a parent that does not exist; a file backed up is refused where a directory is
/// meant.
#[test]
fn a_restore_that_fails_verification_leaves_the_directory_as_it_was() {
    let s3 = S3Server::start(&["backups"]);
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("src/sub")).unwrap();
    std::fs::write(sb.path("src/sub/a"), "new contents").unwrap();
    std::fs::create_dir(sb.path("dst")).unwrap();
    std::fs::write(sb.path("dst/keep.txt"), "the live copy").unwrap();
    let before = tree(&sb.path("dst"));
    let connections = format!("connections:\n{}", s3.connection("backups", "backups"));
    let step = |id: &str, action: &str, with: &str| {
        format!(
            "  - {{id: {id}, action: {action}, on_failure: continue, retry: {{attempts: 1}}, with: {{{with}}}}}\n"
        )
    };
    let m = sb.path("m.json");
    sb.write(
        "backup.yaml",
        &runbook(
            "files-backup",
            &format!(
                "{SECRETS}{connections}steps:\n{}{}{}",
                step(
                    "backup",
                    "files.backup",
                    "path: src, to: {connection: backups, key: k/1}"
                ),
                step(
                    "other",
                    "files.backup",
                    "path: src/sub, to: {connection: backups, key: k/2}"
                ),
                step(
                    "get",
                    "s3.get",
                    &format!(
                        "connection: backups, key: k/1.manifest.json, to: \"{}\"",
                        m.display()
                    )
                )
                .replace("{id: get,", "{id: get, needs: [backup],"),
            ),
        ),
    );
    assert_eq!(run(&sb, "backup.yaml").code, 0);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    manifest["tally"]["files"] = 2.into();
    std::fs::write(
        sb.path("short.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();

    let restore =
        |key: &str, path: &str| format!("path: {path}, from: {{connection: backups, key: {key}}}");
    sb.write(
        "restore.yaml",
        &runbook(
            "files-restore",
            &format!(
                "{SECRETS}{connections}steps:\n{}{}{}",
                step(
                    "parentless",
                    "files.restore",
                    &restore("k/1", "nowhere/dst")
                ),
                step(
                    "put_short",
                    "s3.put",
                    &format!(
                        "connection: backups, key: k/1.manifest.json, file: \"{}\"",
                        sb.path("short.json").display()
                    )
                ),
                step("short", "files.restore", &restore("k/1", "dst"))
                    .replace("{id: short,", "{id: short, needs: [put_short],"),
            ),
        ),
    );
    let r = run(&sb, "restore.yaml");
    let id = r.run_id();
    let error = |step: &str| {
        sb.events(&id)
            .iter()
            .rev()
            .find(|e| e["event"] == "step_failed" && e["step"] == step)
            .map(|e| e["error"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{step} did not fail: {}", r.stderr))
    };
    assert!(
        error("parentless").contains("must exist; nothing was restored"),
        "{}",
        error("parentless")
    );
    let short = error("short");
    assert!(
        short.contains("files: 1, the manifest says 2")
            && short.contains("nothing was restored")
            && short.contains("is as it was"),
        "{short}"
    );
    assert_eq!(tree(&sb.path("dst")), before);
    no_leftovers(sb.dir.path());

    // The manifest put back, but k/1's object replaced by k/2's bytes.
    sb.write(
        "swap.yaml",
        &runbook(
            "files-swap",
            &format!(
                "{SECRETS}{connections}steps:\n{}{}{}{}",
                step(
                    "put_manifest",
                    "s3.put",
                    &format!(
                        "connection: backups, key: k/1.manifest.json, file: \"{}\"",
                        m.display()
                    )
                ),
                step(
                    "get_other",
                    "s3.get",
                    &format!(
                        "connection: backups, key: k/2, to: \"{}\"",
                        sb.path("other.bin").display()
                    )
                ),
                step(
                    "replace",
                    "s3.put",
                    &format!(
                        "connection: backups, key: k/1, file: \"{}\"",
                        sb.path("other.bin").display()
                    )
                )
                .replace(
                    "{id: replace,",
                    "{id: replace, needs: [put_manifest, get_other],"
                ),
                step("corrupt", "files.restore", &restore("k/1", "dst"))
                    .replace("{id: corrupt,", "{id: corrupt, needs: [replace],"),
            ),
        ),
    );
    let r = run(&sb, "swap.yaml");
    let events = sb.events(&r.run_id());
    let corrupt = events
        .iter()
        .rev()
        .find(|e| e["event"] == "step_failed" && e["step"] == "corrupt")
        .map(|e| e["error"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("corrupt did not fail: {}", r.stderr));
    assert!(
        corrupt.contains("SHA-256") && corrupt.contains("nothing was restored"),
        "{corrupt}"
    );
    assert_eq!(tree(&sb.path("dst")), before);
    no_leftovers(sb.dir.path());
}
