//! The folder state store (the default): a folder (default `.lifeboat/`) holding every run's log, the exact
//! runbook it ran, its head anchor, and the named locks.
//!
//! ```text
//! .lifeboat/runs/<run>/log.jsonl     the run log (docs/run-log.md)
//! .lifeboat/runs/<run>/runbook.yaml  the file as it was when the run started (resume runs this)
//! .lifeboat/runs/<run>/driver        flock'd by the one process driving the run
//! .lifeboat/heads/<run>.json         the head anchor: seq and hash of the last line, and whether
//!                                    a process is appending; kept apart from the run's own files
//! .lifeboat/locks/<name>.lock        flock'd by the run holding the lock; says who that is
//! ```
//!
//! The folder and everything in it are its owner's alone (0700, files 0600): the logs hold
//! what runs did, the runbooks what they will do.
//!
//! Liveness comes from flock(2): the kernel drops a dead process's locks, so "the holder is
//! verifiably gone" is exactly "the flock can be taken". Lock files are never deleted, because
//! deleting a flock'd file lets two processes lock two different inodes of the same name.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{Holder, LockError, LockState};

#[derive(Debug, Clone)]
pub struct Folder {
    root: PathBuf,
}

#[derive(Debug, Clone)]
pub struct RunFiles {
    pub dir: PathBuf,
    pub log: PathBuf,
    pub runbook: PathBuf,
}

/// Creates a file only its owner may read or write.
pub fn private_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Creates a folder (and its parents) only its owner may enter; an existing one is made so.
fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Locks taken for one run, held until dropped or released.
#[derive(Debug)]
pub struct FolderLocks {
    held: Vec<(String, File)>,
    holder: Holder,
    /// Runs whose locks were taken over: (lock, run, pid).
    pub taken_over: Vec<(String, String, u32)>,
}

impl Folder {
    /// Opens (and creates) a folder store.
    pub fn open(root: &Path) -> std::io::Result<Folder> {
        private_dir(root)?;
        for sub in ["runs", "locks", "heads"] {
            private_dir(&root.join(sub))?;
        }
        Ok(Folder {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn files(&self, run: &str) -> RunFiles {
        let dir = self.root.join("runs").join(run);
        RunFiles {
            log: dir.join("log.jsonl"),
            runbook: dir.join("runbook.yaml"),
            dir,
        }
    }

    /// Where a run's head anchor is kept: outside its own folder.
    pub fn head_path(&self, run: &str) -> PathBuf {
        self.root.join("heads").join(format!("{run}.json"))
    }

    /// Where runs before lifeboat kept their heads apart kept it: read when there is no other.
    pub fn legacy_head_path(&self, run: &str) -> PathBuf {
        self.root.join("runs").join(run).join("head.json")
    }

    /// Creates a run's folder, hidden, with its copy of the runbook. The caller writes the
    /// first log line there and then [`Store::publish_run`]s it: a run exists only once its
    /// `run_started` is durable, so a crash in between leaves nothing to resume.
    pub fn create_run(&self, run: &str, runbook: &[u8]) -> std::io::Result<RunFiles> {
        let f = self.files(&format!(".new-{run}"));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(&f.dir)?;
        }
        let mut file = private_file(&f.runbook)?;
        file.write_all(runbook)?;
        file.sync_all()?;
        File::open(&f.dir)?.sync_all()?;
        Ok(f)
    }

    /// Makes a created run visible under its id, durably.
    pub fn publish_run(&self, run: &str) -> std::io::Result<RunFiles> {
        let f = self.files(run);
        std::fs::rename(self.files(&format!(".new-{run}")).dir, &f.dir)?;
        File::open(self.root.join("runs"))?.sync_all()?;
        Ok(f)
    }

    /// An existing run's files. The id must name a folder under `runs/`, nothing else.
    pub fn run(&self, run: &str) -> Result<RunFiles, String> {
        if run.is_empty() || !run.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("`{run}` is not a run id"));
        }
        let f = self.files(run);
        if f.log.is_file() {
            Ok(f)
        } else {
            Err(format!(
                "no run `{run}` in {} (see `lifeboat runs`)",
                self.root.display()
            ))
        }
    }

    /// Run ids, newest first (ids sort by start time).
    pub fn runs(&self) -> std::io::Result<Vec<String>> {
        let mut ids: Vec<String> = std::fs::read_dir(self.root.join("runs"))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("log.jsonl").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    /// Makes this process the one driving `run`: `resume` and `approve` may not overlap a live run.
    pub fn drive(&self, run: &str) -> Result<File, String> {
        let f = self.files(run);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(f.dir.join("driver"))
            .map_err(|e| format!("cannot open the run's driver lock: {e}"))?;
        match file.try_lock() {
            Ok(()) => {
                let mut file = file;
                let _ = file.set_len(0);
                let _ = write!(file, "{}", std::process::id());
                Ok(file)
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = (&file).read_to_string(&mut pid);
                Err(format!(
                    "run {run} is being driven by another lifeboat process (pid {})",
                    pid.trim()
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock run {run}: {e}")),
        }
    }

    /// Takes every named lock, or none. `me.run` may retake locks its own earlier process held.
    pub fn acquire(&self, names: &[String], me: &Holder) -> Result<FolderLocks, LockError> {
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut set = FolderLocks {
            held: Vec::new(),
            holder: me.clone(),
            taken_over: Vec::new(),
        };
        for name in sorted {
            let io = |source| LockError::Io {
                name: name.clone(),
                source,
            };
            let path = self.root.join("locks").join(format!("{name}.lock"));
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = read_holder(&mut file).unwrap_or_else(|| Holder {
                        run: "?".into(),
                        pid: 0,
                        host: "?".into(),
                        since: "?".into(),
                        state: LockState::Held,
                    });
                    return Err(LockError::Held {
                        name: name.clone(),
                        holder,
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
            }
            set.taken_over
                .extend(super::take_over(name, read_holder(&mut file), me)?);
            write_holder(&mut file, me).map_err(io)?;
            set.held.push((name.clone(), file));
        }
        Ok(set)
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_holder(file: &mut File, h: &Holder) -> std::io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(
        serde_json::to_string(h)
            .expect("holder serializes")
            .as_bytes(),
    )?;
    file.sync_data()
}

impl FolderLocks {
    pub fn names(&self) -> Vec<String> {
        self.held.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The run stops but keeps its locks (it waits for an approval, or was interrupted).
    pub fn pause(mut self) {
        self.set_state(LockState::Paused);
    }

    /// The run is over: anyone may take the locks.
    pub fn release(mut self) {
        self.set_state(LockState::Free);
    }

    fn set_state(&mut self, state: LockState) {
        self.holder.state = state;
        let h = self.holder.clone();
        for (_, f) in &mut self.held {
            let _ = write_holder(f, &h);
        }
        // Dropping the files drops the flocks.
    }
}
