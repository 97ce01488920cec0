//! The state store: where runs, their logs, heads and locks live. A folder on this machine (the
//! default, `.lifeboat/`), or a PostgreSQL database shared by a team (`--state postgres://...`).
//! Both keep the same things with the same guarantees; the CLI sees only [`Store`].
//!
//! Liveness of a lock holder (or of the process driving a run) is never decided by a pid check:
//! the folder store uses flock(2), the PostgreSQL store session advisory locks. Either is released
//! by the kernel or the server when its process dies, so "the holder is verifiably gone" is exactly
//! "the lock can be taken".

mod claim;
mod folder;
#[cfg(test)]
pub mod memory;
mod postgres;

use serde::{Deserialize, Serialize};

pub use folder::Folder;
pub use postgres::PgStore;

use crate::runlog::{Head, LogWriter};

/// Who holds a lock, as written in its file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub run: String,
    pub pid: u32,
    pub host: String,
    pub since: String,
    pub state: LockState,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LockState {
    /// A live process holds it (or held it and crashed: then its flock is gone).
    Held,
    /// Its run stopped to wait (for an approval, after Ctrl-C) and still needs it.
    Paused,
    Free,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock `{name}` is held by run {} (pid {} on {}, since {})", .holder.run, .holder.pid, .holder.host, .holder.since)]
    Held { name: String, holder: Holder },
    #[error("lock `{name}` is kept by run {}, which stopped to wait and has not finished; `lifeboat resume {}` finishes it", .holder.run, .holder.run)]
    Paused { name: String, holder: Holder },
    #[error("lock `{name}`: {source}")]
    Io {
        name: String,
        source: std::io::Error,
    },
    #[error("lock `{name}`: {message}")]
    Store { name: String, message: String },
}

/// What to do with a lock whose liveness lock (flock, advisory lock) was just taken, given who
/// its record says held it last: the same rule for both stores. `Ok(Some(..))`: it was taken
/// from a crashed run, to be recorded as (lock, run, pid).
fn take_over(
    name: &str,
    prev: Option<Holder>,
    me: &Holder,
) -> Result<Option<(String, String, u32)>, LockError> {
    match prev {
        Some(prev) if prev.run != me.run => match prev.state {
            LockState::Paused => Err(LockError::Paused {
                name: name.to_string(),
                holder: prev,
            }),
            // Its liveness lock is gone, so its process is too: a crash.
            LockState::Held => Ok(Some((name.to_string(), prev.run, prev.pid))),
            LockState::Free => Ok(None),
        },
        _ => Ok(None),
    }
}

pub enum Store {
    Folder(Folder),
    Postgres(Box<PgStore>),
    /// The engine's tests.
    #[cfg(test)]
    Memory(memory::Memory),
}

/// Keeps a run to this process while alive (resume, approve).
pub enum Driver {
    Folder(claim::Claim),
    Postgres(tokio_postgres::Client),
    #[cfg(test)]
    Memory(memory::MemDriver),
}

/// Locks taken for one run.
pub enum LockSet {
    Folder(folder::FolderLocks),
    Postgres(postgres::PgLocks),
    #[cfg(test)]
    Memory(memory::MemLocks),
}

impl LockSet {
    /// Runs whose locks were taken over after they crashed: (lock, run, pid).
    pub fn taken_over(&self) -> &[(String, String, u32)] {
        match self {
            LockSet::Folder(l) => &l.taken_over,
            LockSet::Postgres(l) => &l.taken_over,
            #[cfg(test)]
            LockSet::Memory(l) => &l.taken_over,
        }
    }

    /// Checks that every lock is still this run's, and repairs what can be: a lock file
    /// deleted while held is put back. The name of a lock that was lost, and how.
    pub fn keep(&mut self) -> Result<(), String> {
        match self {
            LockSet::Folder(l) => l.keep().map_err(|name| {
                format!("lock `{name}`: its file was deleted and another process now holds it")
            }),
            LockSet::Postgres(l) => l.keep(),
            #[cfg(test)]
            LockSet::Memory(_) => Ok(()),
        }
    }

    /// The run stops but keeps its locks (it waits for an approval, or was interrupted).
    pub async fn pause(self) {
        match self {
            LockSet::Folder(l) => l.pause(),
            LockSet::Postgres(l) => l.set_state(LockState::Paused).await,
            #[cfg(test)]
            LockSet::Memory(l) => l.set_state(LockState::Paused),
        }
    }

    /// The run is over: anyone may take the locks.
    pub async fn release(self) {
        match self {
            LockSet::Folder(l) => l.release(),
            LockSet::Postgres(l) => l.set_state(LockState::Free).await,
            #[cfg(test)]
            LockSet::Memory(l) => l.set_state(LockState::Free),
        }
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Store {
    /// `spec` is a folder, or a `postgres://` URL (whose password may come from `$PGPASSWORD`).
    pub async fn open(spec: &str) -> Result<Store, String> {
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            PgStore::open(spec)
                .await
                .map(|s| Store::Postgres(Box::new(s)))
        } else {
            Folder::open(std::path::Path::new(spec))
                .map(Store::Folder)
                .map_err(|e| format!("cannot use the state folder {spec}: {e}"))
        }
    }

    /// How to name the store in messages (a URL without its password).
    pub fn describe(&self) -> String {
        match self {
            Store::Folder(f) => f.root().display().to_string(),
            Store::Postgres(p) => p.describe(),
            #[cfg(test)]
            Store::Memory(_) => "memory".into(),
        }
    }

    /// Creates a run that stays invisible until [`Store::publish_run`], with its log writer.
    pub async fn create_run(&self, run: &str, runbook: &[u8]) -> Result<LogWriter, String> {
        match self {
            Store::Folder(f) => {
                // The head first: a published run without one is a run whose head was deleted.
                crate::runlog::write_head(&f.head_path(run), &Head::created(run))
                    .map_err(io("cannot write the head anchor"))?;
                let files = f
                    .create_run(run, runbook)
                    .map_err(io("cannot create the run"))?;
                LogWriter::open(&files.log, 0, crate::runlog::genesis(run))
                    .map_err(io("cannot create the run log"))
            }
            Store::Postgres(p) => p.create_run(run, runbook).await,
            #[cfg(test)]
            Store::Memory(m) => Ok(m.create_run(run, runbook)),
        }
    }

    /// Removes a run whose creation failed before it was published, so a failed start leaves
    /// nothing behind. Best effort: what cannot be removed is invisible anyway.
    pub async fn abandon_run(&self, run: &str) {
        let _ = match self {
            Store::Folder(f) => f.abandon_run(run).map_err(|e| e.to_string()),
            Store::Postgres(p) => p.abandon_run(run).await,
            #[cfg(test)]
            Store::Memory(_) => Ok(()),
        };
    }

    pub async fn publish_run(&self, run: &str) -> Result<(), String> {
        match self {
            Store::Folder(f) => f
                .publish_run(run)
                .map(|_| ())
                .map_err(io("cannot record the run")),
            Store::Postgres(p) => p.publish_run(run).await,
            #[cfg(test)]
            Store::Memory(m) => m.publish_run(run),
        }
    }

    /// A writer appending to an existing run's log.
    pub async fn log_writer(
        &self,
        run: &str,
        last_seq: u64,
        prev: String,
    ) -> Result<LogWriter, String> {
        match self {
            Store::Folder(f) => {
                let files = f.run(run)?;
                LogWriter::open(&files.log, last_seq, prev).map_err(io("cannot open the run log"))
            }
            Store::Postgres(p) => p.log_writer(run, last_seq, prev).await,
            #[cfg(test)]
            Store::Memory(m) => m.log_writer(run, last_seq, prev),
        }
    }

    /// Checks that the run exists.
    pub async fn exists(&self, run: &str) -> Result<(), String> {
        match self {
            Store::Folder(f) => f.run(run).map(|_| ()),
            Store::Postgres(p) => p.exists(run).await,
            #[cfg(test)]
            Store::Memory(m) => m.exists(run),
        }
    }

    pub async fn drive(&self, run: &str) -> Result<Driver, String> {
        match self {
            Store::Folder(f) => f.drive(run).map(Driver::Folder),
            Store::Postgres(p) => p.drive(run).await.map(Driver::Postgres),
            #[cfg(test)]
            Store::Memory(m) => m.drive(run).map(Driver::Memory),
        }
    }

    /// Run ids, newest first.
    pub async fn runs(&self) -> Result<Vec<String>, String> {
        match self {
            Store::Folder(f) => f.runs().map_err(io("cannot list runs")),
            Store::Postgres(p) => p.runs().await,
            #[cfg(test)]
            Store::Memory(m) => Ok(m.runs()),
        }
    }

    /// The log's exact bytes: lines, each ending in a newline.
    pub async fn read_log(&self, run: &str) -> Result<Vec<u8>, String> {
        match self {
            Store::Folder(f) => {
                std::fs::read(f.run(run)?.log).map_err(io("cannot read the run log"))
            }
            Store::Postgres(p) => p.read_log(run).await,
            #[cfg(test)]
            Store::Memory(m) => m.read_log(run),
        }
    }

    /// Cuts a torn last line (a crash mid-write) off a file log; a database has none.
    pub async fn cut_log(&self, run: &str, keep: u64) -> Result<(), String> {
        match self {
            Store::Folder(f) => {
                let path = f.run(run)?.log;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|file| {
                        file.set_len(keep)?;
                        file.sync_all()
                    })
                    .map_err(io("cannot repair the run log's torn last line"))
            }
            Store::Postgres(_) => Ok(()),
            #[cfg(test)]
            Store::Memory(m) => m.cut_log(run, keep),
        }
    }

    /// The runbook exactly as the run started with it.
    pub async fn runbook(&self, run: &str) -> Result<Vec<u8>, String> {
        match self {
            Store::Folder(f) => {
                std::fs::read(f.run(run)?.runbook).map_err(io("cannot read the run's runbook"))
            }
            Store::Postgres(p) => p.runbook(run).await,
            #[cfg(test)]
            Store::Memory(m) => m.runbook(run),
        }
    }

    pub async fn head(&self, run: &str) -> Result<Option<Head>, String> {
        match self {
            Store::Folder(f) => {
                f.run(run)?;
                match crate::runlog::read_head(&f.head_path(run)) {
                    Ok(None) => crate::runlog::read_head(&f.legacy_head_path(run)),
                    other => other,
                }
                .map_err(io("the head anchor is unreadable"))
            }
            Store::Postgres(p) => p.head(run).await,
            #[cfg(test)]
            Store::Memory(m) => m.head(run),
        }
    }

    pub async fn write_head(&self, run: &str, head: &Head) -> Result<(), String> {
        match self {
            Store::Folder(f) => {
                f.run(run)?;
                crate::runlog::write_head(&f.head_path(run), head)
                    .map_err(io("cannot write the head anchor"))
            }
            Store::Postgres(p) => p.write_head(run, head).await,
            #[cfg(test)]
            Store::Memory(m) => m.write_head(run, head),
        }
    }

    /// Who is acting, as the store can vouch for it: the OS account for the folder store, the
    /// session's role (`session_user`) for PostgreSQL. Approvals are recorded, and `approvers`
    /// checked, against this; no flag or variable can set it.
    pub async fn identity(&self) -> Result<String, String> {
        let who = match self {
            Store::Folder(_) => os_account(),
            Store::Postgres(p) => p.session_user().await?,
            #[cfg(test)]
            Store::Memory(m) => m.identity(),
        };
        if crate::text::bad_name(&who) {
            return Err(format!(
                "the state store's identity `{}` holds a control character or a line break; refusing to record it",
                crate::text::printable(&who, false)
            ));
        }
        Ok(who)
    }

    /// Takes every named lock, or none. `me.run` may retake locks its own earlier process held.
    pub async fn acquire(&self, names: &[String], me: &Holder) -> Result<LockSet, LockError> {
        match self {
            Store::Folder(f) => f.acquire(names, me).map(LockSet::Folder),
            Store::Postgres(p) => p.acquire(names, me).await.map(LockSet::Postgres),
            #[cfg(test)]
            Store::Memory(m) => m.acquire(names, me).map(LockSet::Memory),
        }
    }
}

/// A new run id: UTC start time (so ids sort by age) and random bits.
pub fn new_run_id() -> String {
    let mut bytes = [0u8; 3];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    let ts = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%S");
    format!("{ts}Z-{:02x}{:02x}{:02x}", bytes[0], bytes[1], bytes[2])
}

/// The OS account this process runs as (its real uid's name): who the folder store believes is
/// acting, since the folder is this account's own (0700).
#[allow(unsafe_code)]
pub fn os_account() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd is plain data that getpwuid_r fills in; every pointer passed is valid for
    // the sizes given, and `found` is checked before anything it points to is read.
    let name = unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found);
        (rc == 0 && !found.is_null() && !pw.pw_name.is_null()).then(|| {
            std::ffi::CStr::from_ptr(pw.pw_name)
                .to_string_lossy()
                .into_owned()
        })
    };
    name.unwrap_or_else(|| format!("uid {uid}"))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
