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
//! verifiably gone" is exactly "the flock can be taken". Lock files are never deleted by
//! lifeboat, because deleting a flock'd file lets two processes lock two different inodes of
//! the same name; when someone else deletes one, a [`Claim`]'s socket still keeps a second
//! process out, the holder puts the file back, and a paused run's hold is read back from its log.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::claim::{Claim, Kept, Refused};
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
pub(super) fn private_dir(path: &Path) -> std::io::Result<()> {
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
    held: Vec<(String, Claim)>,
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

    /// Removes what [`Folder::create_run`] made of a run that was never published, and its
    /// head; a published run is left alone.
    pub fn abandon_run(&self, run: &str) -> std::io::Result<()> {
        if self.files(run).dir.exists() {
            return Ok(());
        }
        let hidden = self.files(&format!(".new-{run}")).dir;
        match std::fs::remove_dir_all(&hidden) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        match std::fs::remove_file(self.head_path(run)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
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
    pub fn drive(&self, run: &str) -> Result<Claim, String> {
        match Claim::take(&self.files(run).dir.join("driver")) {
            Ok(mut claim) => {
                let file = claim.file();
                let _ = file.set_len(0);
                let _ = write!(file, "{}", std::process::id());
                Ok(claim)
            }
            Err(Refused::Held { file, pid }) => {
                let pid = pid.map(|p| p.to_string()).unwrap_or_else(|| {
                    let mut pid = String::new();
                    if let Some(mut f) = file {
                        let _ = f.read_to_string(&mut pid);
                    }
                    pid.trim().to_string()
                });
                Err(format!(
                    "run {run} is being driven by another lifeboat process (pid {pid})"
                ))
            }
            Err(Refused::Io(e)) => Err(format!("cannot lock run {run}: {e}")),
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
            let mut claim = match Claim::take(&path) {
                Ok(claim) => claim,
                Err(Refused::Held { file, pid }) => {
                    // The file says who holds it unless the socket's holder is someone else
                    // (the file was replaced while held).
                    let recorded = file
                        .and_then(|mut f| read_holder(&mut f))
                        .filter(|h| pid.is_none_or(|pid| h.pid == pid));
                    let holder = match (recorded, pid) {
                        (Some(h), _) => h,
                        // Its file was deleted while held: the socket says by whom.
                        (None, pid) => Holder {
                            run: "unknown (its lock file was deleted)".into(),
                            pid: pid.unwrap_or(0),
                            host: super::hostname(),
                            since: "?".into(),
                            state: LockState::Held,
                        },
                    };
                    return Err(LockError::Held {
                        name: name.clone(),
                        holder,
                    });
                }
                Err(Refused::Io(e)) => return Err(io(e)),
            };
            // An empty file is a lock never held, or one whose file was deleted: a run that
            // stopped to wait keeps its locks with no process, so ask the logs.
            let prev = read_holder(claim.file()).or_else(|| self.paused_holder(name));
            set.taken_over.extend(super::take_over(name, prev, me)?);
            write_holder(claim.file(), me).map_err(io)?;
            set.held.push((name.clone(), claim));
        }
        Ok(set)
    }

    /// The run that stopped to wait (for an approval, after an interrupt) holding lock `name`,
    /// from the runs' logs: the newest whose `run_started` names the lock and whose last
    /// `run_finished` (with no `run_resumed` after it) paused it.
    fn paused_holder(&self, name: &str) -> Option<Holder> {
        let runs = self.runs().ok()?;
        runs.iter().find_map(|run| {
            let text = std::fs::read_to_string(self.files(run).log).ok()?;
            let first: serde_json::Value = serde_json::from_str(text.lines().next()?).ok()?;
            let locks = first.get("locks")?.as_array()?;
            if first["event"] != "run_started" || !locks.iter().any(|l| l == name) {
                return None;
            }
            let last = text.lines().rev().find_map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).ok()?;
                matches!(v["event"].as_str(), Some("run_finished" | "run_resumed")).then_some(v)
            })?;
            let paused = last["event"] == "run_finished"
                && matches!(
                    last["status"].as_str(),
                    Some("waiting_for_approval" | "interrupted")
                );
            paused.then(|| Holder {
                run: run.clone(),
                pid: first["pid"].as_u64().unwrap_or(0) as u32,
                host: first["host"].as_str().unwrap_or("?").to_string(),
                since: first["ts"].as_str().unwrap_or("?").to_string(),
                state: LockState::Paused,
            })
        })
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
        // A paused hold lives only in the file: put it back first if it was deleted.
        let _ = self.keep();
        self.holder.state = state;
        let h = self.holder.clone();
        for (_, claim) in &mut self.held {
            let _ = write_holder(claim.file(), &h);
        }
        // Dropping the claims drops the flocks and sockets.
    }

    /// Puts back the file of any lock deleted or replaced while held; the name of the first
    /// lock another process now holds.
    pub fn keep(&mut self) -> Result<(), String> {
        let holder = self.holder.clone();
        for (name, claim) in &mut self.held {
            match claim.keep() {
                Kept::Intact => {}
                Kept::Restored => {
                    let _ = write_holder(claim.file(), &holder);
                }
                Kept::Lost => return Err(name.clone()),
            }
        }
        Ok(())
    }
}
