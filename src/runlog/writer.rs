//! Appending with group commit. Appends are written at once (one `write` per line, so a crash never
//! leaves half a line from a live process); durability is asked for separately, and one
//! `fdatasync` makes every line written before it durable. Steps that finish together therefore
//! share a sync, and a step's "succeeded" line rides on the sync of the next step's "started".

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{format_line, now_rfc3339, sha256_hex};

pub struct FileLog {
    shared: Arc<Shared>,
    durable: tokio::sync::watch::Receiver<u64>,
    /// A second handle on the file, for syncing without holding the append lock.
    sync_file: File,
}

struct Shared {
    state: Mutex<State>,
    durable: tokio::sync::watch::Sender<u64>,
    fsyncs: AtomicU64,
}

struct State {
    file: File,
    next_seq: u64,
    prev: String,
    /// Highest seq written to the file.
    written: u64,
    /// The file's length after the last whole line.
    len: u64,
    /// Someone is syncing now: later waiters wait for that sync, then sync what is left.
    syncing: bool,
    failed: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct WriterStats {
    pub lines: u64,
    pub fsyncs: u64,
}

impl FileLog {
    /// Opens a log for appending after `last_seq` lines whose last line hashes to `prev`.
    pub fn open(path: &Path, last_seq: u64, prev: String) -> std::io::Result<FileLog> {
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?
        };
        let sync_file = file.try_clone()?;
        let len = file.metadata()?.len();
        if last_seq == 0 {
            // The file's directory entry must be durable too, or a crash could lose the whole log.
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let (tx, rx) = tokio::sync::watch::channel(last_seq);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                file,
                next_seq: last_seq + 1,
                prev,
                written: last_seq,
                len,
                syncing: false,
                failed: None,
            }),
            durable: tx,
            fsyncs: AtomicU64::new(0),
        });
        Ok(FileLog {
            shared,
            durable: rx,
            sync_file,
        })
    }

    /// Writes one event (a JSON object with an `event` member) and returns its seq. Not yet
    /// durable: call [`LogWriter::durable`] before starting anything the event announces.
    pub fn append(
        &self,
        event: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(u64, String), String> {
        let mut st = self.shared.state.lock().expect("log state lock");
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        let seq = st.next_seq;
        let ts = now_rfc3339();
        let line = format_line(seq, &ts, event, &st.prev);
        let mut bytes = line.into_bytes();
        bytes.push(b'\n');
        if let Err(e) = st.file.write_all(&bytes) {
            // Part of the line may be in the file (a disk that filled up mid-write): cut it
            // off, so the log ends with its last whole line, as resume and verify expect.
            let len = st.len;
            let _ = st.file.set_len(len);
            let msg = format!("cannot append to the run log: {e}");
            st.failed = Some(msg.clone());
            return Err(msg);
        }
        st.len += bytes.len() as u64;
        bytes.pop();
        st.prev = sha256_hex(&bytes);
        st.next_seq += 1;
        st.written = seq;
        Ok((seq, ts))
    }

    /// Waits until every line up to `seq` is on disk. The first waiter syncs, on its own thread
    /// (no hand-off to a sync thread and back); whoever comes while it syncs waits for it and,
    /// if that sync did not cover them, one of them syncs everything written meanwhile: one
    /// fsync for a whole group of steps.
    pub async fn durable(&self, seq: u64) -> Result<(), String> {
        let mut rx = self.durable.clone();
        loop {
            if *rx.borrow_and_update() >= seq {
                return self.check();
            }
            let target = {
                let mut st = self.shared.state.lock().expect("log state lock");
                if let Some(e) = &st.failed {
                    return Err(e.clone());
                }
                if st.syncing {
                    None
                } else {
                    st.syncing = true;
                    Some(st.written)
                }
            };
            match target {
                None => {
                    if rx.changed().await.is_err() {
                        return Err("the run log was closed".into());
                    }
                }
                Some(target) => {
                    let result = blocking(|| self.sync_file.sync_data());
                    self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
                    let mut st = self.shared.state.lock().expect("log state lock");
                    st.syncing = false;
                    match result {
                        Ok(()) => {
                            drop(st);
                            self.shared.durable.send_replace(target);
                        }
                        Err(e) => {
                            let msg = format!("cannot sync the run log to disk: {e}");
                            st.failed = Some(msg.clone());
                            drop(st);
                            // Wake every waiter so it sees the failure instead of waiting forever.
                            self.shared.durable.send_replace(u64::MAX);
                            return Err(msg);
                        }
                    }
                }
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        match &self.shared.state.lock().expect("log state lock").failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    pub fn last(&self) -> (u64, String) {
        let st = self.shared.state.lock().expect("log state lock");
        (st.next_seq - 1, st.prev.clone())
    }

    pub fn stats(&self) -> WriterStats {
        let st = self.shared.state.lock().expect("log state lock");
        WriterStats {
            lines: st.written,
            fsyncs: self.shared.fsyncs.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FileLog {
    fn drop(&mut self) {
        // Whatever was written and not yet synced (a last `step_succeeded`) is synced on close.
        let st = self.shared.state.lock().expect("log state lock");
        if st.failed.is_none() && *self.durable.borrow() < st.written {
            let _ = self.sync_file.sync_data();
        }
    }
}

/// Runs a blocking call from async code: on a multi-threaded runtime the worker hands its other
/// tasks off first; elsewhere (a current-thread runtime, no runtime) it just blocks.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
