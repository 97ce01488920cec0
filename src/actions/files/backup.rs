//! `files.backup`: a directory as one tar stream, sealed and uploaded by the backup pipeline.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{FORMAT, Tally};
use crate::actions::backup::BackupLocation;
use crate::actions::postgres::backup::Encryption;
use crate::actions::s3::S3;
use crate::actions::support::pipeline;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When,
    WithProblem, out,
};

/// Back up a directory to S3 as one tar stream: compressed with zstd, optionally encrypted
/// with age, checksummed, with a manifest beside it (counts of files, directories, symlinks and
/// bytes). Each file must stay unchanged while it is read, or the backup fails and nothing is
/// stored; the directory as a whole is consistent only if nothing writes to it: stop its
/// writers first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilesBackup {
    /// The directory to back up, on the machine lifeboat runs on.
    pub path: String,
    pub to: BackupLocation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<Encryption>,
    /// zstd level, 1-19 (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 19))]
    pub compression_level: Option<u8>,
    /// The S3 storage class of the object written; the bucket's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// A JSON file inside the directory (relative to it) that describes it, such as a vector
    /// index's metadata: recorded in the manifest and returned as `outputs.metadata`, so a
    /// runbook can check it against the system it belongs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

impl ActionSpec for FilesBackup {
    const NAME: &'static str = "files.backup";
    const SUMMARY: &'static str = "Back up a directory to S3 as one tar stream (zstd, optional age, SHA-256, manifest with counts); a file that changes while read fails it";
    const OUTPUTS: &'static [Output] = &[
        out("key", "the object key"),
        out("size", "bytes stored"),
        out("plain_size", "bytes of the tar stream"),
        out("sha256", "SHA-256 of the stored object"),
        out("files", "regular files backed up"),
        out("directories", "directories backed up"),
        out("symlinks", "symbolic links backed up"),
        out("bytes", "the files' bytes"),
        out(
            "skipped",
            "sockets, FIFOs and devices left out (their paths, at most 20)",
        ),
        out(
            "metadata",
            "the `metadata` file's JSON, as backed up (null without `metadata`)",
        ),
        out(
            "consistent_at",
            "when the backup began reading (RFC 3339); see docs/files.md",
        ),
        out("manifest", "the manifest's key"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;
    const STORED_BYTES: Option<&'static str> = Some("size");

    fn unsupported(&self) -> Option<String> {
        self.to.s3_only(Self::NAME, "to", "writes to")
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(run(self, cx))
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        self.to.connections("/to/connection")
    }

    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.to.check("/to");
        p.extend(Encryption::problem(self.encrypt.as_ref()));
        if self.path.is_empty() {
            p.push(WithProblem::new("/path", "give the directory to back up"));
        }
        if let Some(m) = &self.metadata
            && !crate::actions::unknown_yet(m)
            && let Some(why) = super::inner_path_problem(m)
        {
            p.push(WithProblem::new("/metadata", why));
        }
        p
    }

    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let meta = self
            .metadata
            .as_deref()
            .map(|m| format!(", recording {m}"))
            .unwrap_or_default();
        format!(
            "archive the directory {} (tar) to {} (zstd{}){meta}; each file must not change while it is read: stop its writers first",
            self.path,
            self.to.describe(cx),
            Encryption::words(self.encrypt.as_ref())
        )
    }
}

/// At most this many skipped paths are named in the outputs.
const SKIPPED_NAMED: usize = 20;

async fn run(w: &FilesBackup, cx: &Exec<'_>) -> Result<Value, ActionError> {
    let (Some(conn), Some(key)) = (&w.to.connection, &w.to.key) else {
        return Err(ActionError::permanent("`to` needs `connection` and `key`"));
    };
    let root = PathBuf::from(&w.path);
    match std::fs::metadata(&root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ActionError::permanent(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        Err(e) => {
            return Err(ActionError::permanent(format!("{}: {e}", root.display())));
        }
    }
    let metadata = match &w.metadata {
        Some(rel) => {
            if let Some(why) = super::inner_path_problem(rel) {
                return Err(ActionError::permanent(format!("`metadata`: {why}")));
            }
            Some(super::read_metadata(&root, rel).map_err(ActionError::permanent)?)
        }
        None => None,
    };
    let s3c = S3::from_exec(cx, conn).await?;
    let seal = match &w.encrypt {
        Some(e) => e.seal()?,
        None => pipeline::Seal::None,
    };
    let level = i32::from(w.compression_level.unwrap_or(3));
    let began = jiff::Timestamp::now();
    let walk_root = root.clone();
    let shown = root.display().to_string();
    let ((tally, skipped), sealed) = pipeline::write_to_s3(
        &s3c,
        key,
        level,
        seal.clone(),
        w.storage_class.as_deref(),
        move |out| archive(&walk_root, out),
        move |e| {
            let changed = e.get_ref().is_some_and(|i| i.is::<Changed>());
            let msg = format!("archiving {shown}: {e}");
            if changed {
                ActionError::transient(format!(
                    "{msg}; nothing was stored (stop what writes to the directory first)"
                ))
            } else {
                ActionError::permanent(format!("{msg}; nothing was stored"))
            }
        },
    )
    .await?;
    let manifest = json!({
        "format": FORMAT,
        "path": w.path,
        "consistent_at": began.to_string(),
        "consistency": "each file unchanged while read",
        "tally": tally,
        "skipped": skipped,
        "metadata_file": w.metadata,
        "metadata": metadata,
        "mode": mode_of(&root),
    });
    let outputs = json!({
        "files": tally.files,
        "directories": tally.directories,
        "symlinks": tally.symlinks,
        "bytes": tally.bytes,
        "skipped": skipped.iter().take(SKIPPED_NAMED).collect::<Vec<_>>(),
        "metadata": metadata,
        "consistent_at": began.to_string(),
    });
    let written = crate::actions::backup::Written {
        s3: &s3c,
        key,
        level,
        seal: &seal,
        sealed: &sealed,
        storage_class: w.storage_class.as_deref(),
    };
    crate::actions::backup::record(written, manifest, outputs).await
}

fn mode_of(p: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// A file changed, appeared or vanished while the backup read it: trying again (with its
/// writers stopped) can succeed.
#[derive(Debug)]
struct Changed(String);

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Changed {}

fn changed(msg: String) -> std::io::Error {
    std::io::Error::other(Changed(msg))
}

/// Writes the tree under `root` to `out` as tar, in name order (the same tree makes the same
/// stream), symlinks as links; returns what it wrote and the special files it left out.
fn archive(root: &Path, out: &mut dyn Write) -> std::io::Result<(Tally, Vec<String>)> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    let mut tally = Tally::default();
    let mut skipped = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let entry = entry.map_err(|e| match e.io_error().map(std::io::Error::kind) {
            Some(std::io::ErrorKind::NotFound) => changed(format!("{e}: it vanished while read")),
            _ => std::io::Error::other(e.to_string()),
        })?;
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("walkdir yields paths under its root");
        let kind = entry.file_type();
        if kind.is_dir() {
            let meta = entry.metadata().map_err(std::io::Error::other)?;
            let mut h = header(&meta, tar::EntryType::Directory);
            tar.append_data(&mut h, rel, std::io::empty())?;
            tally.directories += 1;
        } else if kind.is_symlink() {
            let meta = entry.metadata().map_err(std::io::Error::other)?;
            let target = std::fs::read_link(entry.path())?;
            let mut h = header(&meta, tar::EntryType::Symlink);
            tar.append_link(&mut h, rel, target)?;
            tally.symlinks += 1;
        } else if kind.is_file() {
            tally.bytes += append_file(&mut tar, entry.path(), rel)?;
            tally.files += 1;
        } else {
            skipped.push(rel.display().to_string());
        }
    }
    tar.into_inner()?.flush()?;
    Ok((tally, skipped))
}

fn header(meta: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    h.set_entry_type(kind);
    h.set_size(0);
    h
}

/// Appends one file, read through the handle it was opened with; fails when its size or
/// modification time moved while it was read (tar records the size before the bytes: a file
/// that grew or shrank would make a stream that lies).
fn append_file(
    tar: &mut tar::Builder<&mut dyn Write>,
    path: &Path,
    rel: &Path,
) -> std::io::Result<u64> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(changed(format!("{} vanished while read", path.display())));
        }
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ));
        }
    };
    let before = file.metadata()?;
    let size = before.len();
    let mut h = header(&before, tar::EntryType::Regular);
    h.set_size(size);
    let mut read = Exact {
        inner: (&mut file).take(size),
        n: 0,
    };
    tar.append_data(&mut h, rel, &mut read)?;
    let n = read.n;
    let mut rest = [0u8; 1];
    let grew = file.read(&mut rest)? > 0;
    let after = file.metadata()?;
    if n != size || grew || after.len() != size || after.modified()? != before.modified()? {
        return Err(changed(format!(
            "{} changed while read ({} bytes when opened, {} after)",
            path.display(),
            size,
            after.len()
        )));
    }
    Ok(size)
}

/// Counts what is read, so a file that shrank under the reader is noticed.
struct Exact<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;

    #[test]
    fn the_plan_says_to_stop_writers() {
        let d = describe::<FilesBackup>(json!({
            "path": "/srv/index", "to": {"connection": "b", "key": "index/1.tar.zst"},
            "metadata": "meta.json"
        }));
        assert_eq!(
            d,
            "archive the directory /srv/index (tar) to object index/1.tar.zst in <b> (zstd), recording meta.json; each file must not change while it is read: stop its writers first"
        );
    }

    #[test]
    fn metadata_must_be_inside_the_directory() {
        let b = parse::<FilesBackup>(json!({
            "path": "/srv/index", "to": {"connection": "b", "key": "k"}, "metadata": "../x.json"
        }));
        assert_eq!(b.check()[0].field, "/metadata");
    }

    /// The stream a tree makes, read back with the tar crate: every kind, in name order.
    #[test]
    fn a_tree_archives_in_name_order_with_links_and_skips_fifos() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/inner")).unwrap();
        std::fs::write(root.join("a.bin"), [0u8, 1, 2, 255]).unwrap();
        std::fs::write(root.join("b/inner/c.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("b/inner/c.txt", root.join("link")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("pipe"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let mut bytes = Vec::new();
        let (tally, skipped) = archive(root, &mut bytes).unwrap();
        assert_eq!(
            tally,
            Tally {
                files: 2,
                directories: 2,
                symlinks: 1,
                bytes: 9
            }
        );
        assert_eq!(skipped, ["pipe"]);
        let mut names = Vec::new();
        for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let e = e.unwrap();
            names.push((
                e.path().unwrap().display().to_string(),
                e.header().entry_type(),
            ));
        }
        assert_eq!(
            names,
            [
                ("a.bin".to_string(), tar::EntryType::Regular),
                ("b".into(), tar::EntryType::Directory),
                ("b/inner".into(), tar::EntryType::Directory),
                ("b/inner/c.txt".into(), tar::EntryType::Regular),
                ("link".into(), tar::EntryType::Symlink),
            ]
        );
    }

    /// A file whose size when opened is not what can be read (here a /proc file: 0 bytes by
    /// its size, text when read) is a file that changed while read: refused, as transient.
    #[test]
    fn a_file_that_grows_while_read_fails_the_backup() {
        let mut out = Vec::new();
        let mut tar = tar::Builder::new(&mut out as &mut dyn Write);
        let e = append_file(
            &mut tar,
            Path::new("/proc/self/status"),
            Path::new("status"),
        )
        .unwrap_err();
        assert!(e.get_ref().unwrap().is::<Changed>(), "{e}");
        assert!(e.to_string().contains("changed while read"), "{e}");
    }
}
