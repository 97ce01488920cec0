//! `files.restore`: a `files.backup` unpacked beside the directory it replaces, verified, then
//! swapped in by one rename.

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{FORMAT, Tally};
use crate::actions::backup::BackupLocation;
use crate::actions::s3::S3;
use crate::actions::support::pipeline::{Sink, open_from_s3};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When,
    WithProblem, out,
};

/// Restore a directory from a `files.backup`. Never half-restored: the backup is unpacked into
/// a new directory beside the target while it downloads, its SHA-256 and its counts of files,
/// directories, symlinks and bytes are checked against the manifest, it is flushed to disk, and
/// only then does one atomic rename exchange it with the target. A failure before that leaves
/// the target as it was; running the step again (a retry, `resume`) starts over cleanly.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesRestore {
    pub from: BackupLocation,
    /// The directory to replace (or create: its parent must exist), on the machine lifeboat runs
    /// on.
    pub path: String,
    /// age identity (private key) or passphrase to decrypt with, usually `{{ secrets.NAME }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrypt_with: Option<String>,
    /// The backup's expected SHA-256; when absent, the manifest beside the backup gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Keep what the directory held as `<path>.previous-<time>` beside it instead of removing
    /// it (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_previous: bool,
}

impl ActionSpec for FilesRestore {
    const NAME: &'static str = "files.restore";
    const SUMMARY: &'static str = "Restore a directory from a files.backup: unpacked beside it, checked against the manifest, then swapped in by one atomic rename";
    const OUTPUTS: &'static [Output] = &[
        out("key", "the backup's object key"),
        out("sha256", "the backup's SHA-256, as verified"),
        out("path", "the directory restored"),
        out("files", "regular files restored"),
        out("directories", "directories restored"),
        out("symlinks", "symbolic links restored"),
        out("bytes", "the files' bytes"),
        out(
            "metadata",
            "the backup's `metadata` file's JSON, read from the restored directory (null when the backup names none)",
        ),
        out(
            "previous",
            "where the directory's earlier contents are kept (`keep_previous`), else null",
        ),
        out(
            "consistent_at",
            "when the backup was taken, from its manifest (for RPO)",
        ),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::If {
        what: "without `keep_previous`",
        test: |a| !a.keep_previous,
    };
    const RUNNABLE: bool = true;
    const RESTORED_AS_OF: Option<&'static str> = Some("consistent_at");

    /// Each attempt unpacks afresh beside the target and swaps whole: running it twice leaves
    /// what running it once does.
    fn idempotent(&self) -> bool {
        true
    }

    fn unsupported(&self) -> Option<String> {
        self.from.s3_only(Self::NAME, "from", "reads from")
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(run(self, cx))
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        self.from.connections("/from/connection")
    }

    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.from.check("/from");
        if self.path.is_empty() || self.path.trim_end_matches('/').is_empty() {
            p.push(WithProblem::new(
                "/path",
                "give the directory to restore (not the root directory)",
            ));
        }
        p
    }

    fn describe(&self, _cx: &dyn DescribeContext) -> String {
        let old = if self.keep_previous {
            format!("keep its earlier contents as {}.previous-<time>", self.path)
        } else {
            "remove its earlier contents".into()
        };
        format!(
            "verify {} while unpacking it beside {} (SHA-256, decryption, counts in its manifest), then swap it in by one rename and {old}",
            self.from
                .key
                .as_deref()
                .map(|k| format!("object {k}"))
                .unwrap_or_else(|| "the backup".into()),
            self.path
        )
    }
}

/// The names beside the target a restore uses: where it unpacks, and where a two-rename swap
/// (a filesystem without `RENAME_EXCHANGE`) puts the old contents for a moment.
struct Places {
    target: PathBuf,
    new: PathBuf,
    old: PathBuf,
}

impl Places {
    fn of(path: &str) -> Result<Places, ActionError> {
        let target = PathBuf::from(path.trim_end_matches('/'));
        let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
            return Err(ActionError::permanent(format!(
                "{path}: not a directory lifeboat can restore into"
            )));
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let name = name.to_string_lossy();
        Ok(Places {
            new: parent.join(format!(".{name}.lifeboat-new")),
            old: parent.join(format!(".{name}.lifeboat-old")),
            target,
        })
    }

    fn parent(&self) -> &Path {
        self.new.parent().expect("made from a parent")
    }

    /// Undoes what an interrupted attempt left: a swap stopped halfway is put back (the old
    /// contents return to the target), a half-unpacked directory is removed.
    fn tidy(&self, keep_previous: bool) -> Result<(), ActionError> {
        let io = |what: &str, p: &Path, e: std::io::Error| {
            ActionError::permanent(format!("{what} {}: {e}", p.display()))
        };
        if self.old.exists() {
            if !self.target.exists() {
                std::fs::rename(&self.old, &self.target)
                    .map_err(|e| io("putting back", &self.old, e))?;
            } else if keep_previous {
                std::fs::rename(&self.old, previous_name(&self.target))
                    .map_err(|e| io("keeping", &self.old, e))?;
            } else {
                std::fs::remove_dir_all(&self.old).map_err(|e| io("removing", &self.old, e))?;
            }
        }
        if self.new.exists() {
            std::fs::remove_dir_all(&self.new).map_err(|e| io("removing", &self.new, e))?;
        }
        Ok(())
    }
}

fn previous_name(target: &Path) -> PathBuf {
    let stamp = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let mut name = target.as_os_str().to_owned();
    name.push(format!(".previous-{stamp}"));
    PathBuf::from(name)
}

async fn run(w: &FilesRestore, cx: &Exec<'_>) -> Result<Value, ActionError> {
    let (Some(conn), Some(key)) = (&w.from.connection, &w.from.key) else {
        return Err(ActionError::permanent(
            "`from` needs `connection` and `key`",
        ));
    };
    let places = Places::of(&w.path)?;
    if !places.parent().is_dir() {
        return Err(ActionError::permanent(format!(
            "{}: the directory to restore into must exist; nothing was restored",
            places.parent().display()
        )));
    }
    places.tidy(w.keep_previous)?;
    if let Ok(m) = std::fs::symlink_metadata(&places.target)
        && !m.is_dir()
    {
        return Err(ActionError::permanent(format!(
            "{} is not a directory; nothing was restored",
            places.target.display()
        )));
    }
    let s3c = S3::from_exec(cx, conn).await?;
    let stored = crate::actions::backup::stored(&s3c, key).await?;
    let (Some(object), Some(manifest)) = (
        stored.objects.first().filter(|_| stored.objects.len() == 1),
        stored.manifest.as_ref(),
    ) else {
        return Err(ActionError::permanent(format!(
            "s3://{}/{key} is not a `files.backup` (no manifest of one); nothing was restored",
            s3c.bucket
        )));
    };
    let format = manifest.get("format").and_then(Value::as_str);
    if format != Some(FORMAT) {
        return Err(ActionError::permanent(format!(
            "s3://{}/{key} is a `{}` backup, not a `files.backup`; nothing was restored",
            s3c.bucket,
            format.unwrap_or("unknown")
        )));
    }
    let want: Tally = manifest
        .get("tally")
        .cloned()
        .and_then(|t| serde_json::from_value(t).ok())
        .ok_or_else(|| {
            ActionError::permanent(format!(
                "the manifest of s3://{}/{key} has no counts to check the restore by; nothing was restored",
                s3c.bucket
            ))
        })?;
    crate::actions::backup::expect_sha256(w.sha256.as_ref(), &object.sha256)?;
    let opener = Arc::new(crate::actions::postgres::restore::opener(
        w.decrypt_with.as_ref(),
        Some(manifest),
    )?);
    std::fs::create_dir(&places.new)
        .map_err(|e| ActionError::permanent(format!("creating {}: {e}", places.new.display())))?;
    let unpacked = Arc::new(Mutex::new(Tally::default()));
    let into = places.new.clone();
    let tally = unpacked.clone();
    let loaded = open_from_s3(
        &s3c,
        key,
        &object.sha256,
        opener,
        Sink::Reader(Box::new(move |r| {
            *tally.lock().expect("not poisoned") = unpack(r, &into)?;
            Ok(())
        })),
    )
    .await;
    let nothing = |msg: String| {
        let _ = std::fs::remove_dir_all(&places.new);
        ActionError::permanent(format!(
            "{msg}; nothing was restored: {} is as it was",
            places.target.display()
        ))
    };
    loaded.map_err(|e| nothing(e.message))?;
    let got = *unpacked.lock().expect("not poisoned");
    let differences = got.differences(&want);
    if !differences.is_empty() {
        return Err(nothing(format!(
            "the restored directory does not match the backup's manifest ({})",
            differences.join("; ")
        )));
    }
    let metadata = match manifest.get("metadata_file").and_then(Value::as_str) {
        Some(rel) => {
            let m = super::read_metadata(&places.new, rel).map_err(&nothing)?;
            if manifest.get("metadata") != Some(&m) {
                return Err(nothing(format!(
                    "{rel} differs from what the manifest recorded of it"
                )));
            }
            m
        }
        None => Value::Null,
    };
    if let Some(mode) = manifest.get("mode").and_then(Value::as_u64) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&places.new, std::fs::Permissions::from_mode(mode as u32))
            .map_err(|e| nothing(format!("setting the mode of {}: {e}", places.new.display())))?;
    }
    sync_filesystem(&places.new).map_err(|e| nothing(format!("flushing to disk: {e}")))?;
    let previous = swap_in(&places, w.keep_previous)?;
    Ok(json!({
        "key": key,
        "sha256": object.sha256,
        "path": places.target.display().to_string(),
        "files": got.files,
        "directories": got.directories,
        "symlinks": got.symlinks,
        "bytes": got.bytes,
        "metadata": metadata,
        "previous": previous.map(|p| p.display().to_string()),
        "consistent_at": manifest.get("consistent_at"),
    }))
}

/// Puts the unpacked directory in the target's place: one `renameat2(RENAME_EXCHANGE)`, so the
/// target is at every instant either all old or all new; where the filesystem cannot exchange,
/// two renames, which an interrupted attempt's [`Places::tidy`] puts back. Returns where the
/// old contents were kept.
fn swap_in(places: &Places, keep_previous: bool) -> Result<Option<PathBuf>, ActionError> {
    let io = |what: &str, e: std::io::Error| {
        ActionError::permanent(format!("{what} {}: {e}", places.target.display()))
    };
    let exists = places.target.exists();
    if exists {
        match exchange(&places.new, &places.target) {
            Ok(()) => std::fs::rename(&places.new, &places.old)
                .map_err(|e| io("moving aside the earlier contents of", e))?,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                std::fs::rename(&places.target, &places.old).map_err(|e| io("moving aside", e))?;
                std::fs::rename(&places.new, &places.target).map_err(|e| io("replacing", e))?;
            }
            Err(e) => return Err(io("swapping in", e)),
        }
    } else {
        std::fs::rename(&places.new, &places.target).map_err(|e| io("creating", e))?;
    }
    sync_dir(places.parent()).map_err(|e| io("flushing the rename of", e))?;
    if !exists {
        return Ok(None);
    }
    if keep_previous {
        let kept = previous_name(&places.target);
        std::fs::rename(&places.old, &kept)
            .map_err(|e| io("keeping the earlier contents of", e))?;
        Ok(Some(kept))
    } else {
        // The restore is done; a failure to remove the old contents is left for the next
        // attempt's tidy rather than failing a restore that is in place.
        let _ = std::fs::remove_dir_all(&places.old);
        Ok(None)
    }
}

/// `renameat2(a, b, RENAME_EXCHANGE)`: std has no atomic exchange.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(std::io::Error::from)
}

/// Every file unpacked reaches the disk before the rename makes it the target: one `syncfs`
/// rather than an fsync per file.
fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    rustix::fs::syncfs(std::fs::File::open(dir)?).map_err(std::io::Error::from)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Unpacks a tar stream into `dir` (which is new and empty) and counts what it holds. Paths
/// that would leave `dir` are refused, not skipped. Directories are made writable first and
/// given their own mode and time at the end, deepest first, so a read-only directory in the
/// backup does not stop its own files from being restored.
fn unpack(r: &mut dyn std::io::Read, dir: &Path) -> Result<Tally, String> {
    let mut archive = tar::Archive::new(r);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(false);
    let mut tally = Tally::default();
    let mut dirs = Vec::new();
    let bad = |e: std::io::Error| format!("unpacking: {e}");
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.into_owned();
        if path.as_os_str().is_empty()
            || path
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(format!(
                "the backup holds {}, which would land outside the directory",
                path.display()
            ));
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                let at = dir.join(&path);
                std::fs::create_dir_all(&at).map_err(|e| format!("{}: {e}", at.display()))?;
                let mode = entry.header().mode().map_err(bad)?;
                let mtime = entry.header().mtime().map_err(bad)?;
                dirs.push((at, mode, mtime));
                tally.directories += 1;
            }
            tar::EntryType::Regular | tar::EntryType::Symlink => {
                let size = entry.header().size().map_err(bad)?;
                if !entry.unpack_in(dir).map_err(bad)? {
                    return Err(format!(
                        "the backup holds {}, which would land outside the directory",
                        path.display()
                    ));
                }
                if kind == tar::EntryType::Regular {
                    tally.files += 1;
                    tally.bytes += size;
                } else {
                    tally.symlinks += 1;
                }
            }
            other => {
                return Err(format!(
                    "the backup holds {} of a kind a files.backup never writes ({other:?})",
                    path.display()
                ));
            }
        }
    }
    dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    for (at, mode, mtime) in dirs {
        use std::os::unix::fs::PermissionsExt;
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
        std::fs::File::open(&at)
            .and_then(|f| f.set_modified(when))
            .and_then(|()| {
                std::fs::set_permissions(&at, std::fs::Permissions::from_mode(mode & 0o7777))
            })
            .map_err(|e| format!("{}: {e}", at.display()))?;
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;

    #[test]
    fn the_plan_names_the_swap() {
        let d = describe::<FilesRestore>(json!({
            "from": {"connection": "b", "key": "index/1.tar.zst"}, "path": "/srv/index"
        }));
        assert_eq!(
            d,
            "verify object index/1.tar.zst while unpacking it beside /srv/index (SHA-256, decryption, counts in its manifest), then swap it in by one rename and remove its earlier contents"
        );
        let r = parse::<FilesRestore>(json!({
            "from": {"connection": "b", "key": "k"}, "path": "/srv/index", "keep_previous": true
        }));
        assert!(!r.destructive());
        assert!(r.describe(&Cx).contains("/srv/index.previous-<time>"));
    }

    #[test]
    fn the_root_is_not_a_target() {
        let r =
            parse::<FilesRestore>(json!({"from": {"connection": "b", "key": "k"}, "path": "/"}));
        assert_eq!(r.check()[0].field, "/path");
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], u32)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, mode) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_mtime(1_700_000_000);
            // `append_data` refuses `..`; the raw name is what a hostile archive holds.
            h.as_gnu_mut().unwrap().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_read_only_directory_still_gets_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let t = tar_of(&[
            ("ro", tar::EntryType::Directory, b"", 0o555),
            ("ro/f", tar::EntryType::Regular, b"abc", 0o644),
        ]);
        let tally = unpack(&mut &t[..], dir.path()).unwrap();
        assert_eq!((tally.files, tally.directories, tally.bytes), (1, 1, 3));
        assert_eq!(std::fs::read(dir.path().join("ro/f")).unwrap(), b"abc");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ro"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o555);
        std::fs::set_permissions(
            dir.path().join("ro"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }

    #[test]
    fn a_path_out_of_the_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("in");
        std::fs::create_dir(&inside).unwrap();
        let t = tar_of(&[("../escaped", tar::EntryType::Regular, b"x", 0o644)]);
        let e = unpack(&mut &t[..], &inside).unwrap_err();
        assert!(e.contains("outside the directory"), "{e}");
        assert!(!dir.path().join("escaped").exists());
        let t = tar_of(&[("dev", tar::EntryType::Char, b"", 0o644)]);
        let e = unpack(&mut &t[..], &inside).unwrap_err();
        assert!(e.contains("never writes"), "{e}");
    }

    #[test]
    fn tidy_puts_back_a_swap_cut_halfway() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("index");
        let p = Places::of(target.to_str().unwrap()).unwrap();
        // A crash between the two renames of a swap: the target gone, its contents aside, the
        // new directory half there.
        std::fs::create_dir(&p.old).unwrap();
        std::fs::write(p.old.join("f"), "old").unwrap();
        std::fs::create_dir(&p.new).unwrap();
        p.tidy(false).unwrap();
        assert_eq!(std::fs::read_to_string(target.join("f")).unwrap(), "old");
        assert!(!p.new.exists() && !p.old.exists());
    }

    #[test]
    fn a_swap_exchanges_and_keeps_the_previous_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("index");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("f"), "old").unwrap();
        let p = Places::of(target.to_str().unwrap()).unwrap();
        std::fs::create_dir(&p.new).unwrap();
        std::fs::write(p.new.join("f"), "new").unwrap();
        let kept = swap_in(&p, true).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(target.join("f")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(kept.join("f")).unwrap(), "old");
        assert!(!p.new.exists() && !p.old.exists());
    }
}
