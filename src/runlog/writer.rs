//! Appending with group commit. Appends are written at once (one `write` per line, so a crash never
//! leaves half a line from a live process); durability is asked for separately, and one
//! `fdatasync` makes every line written before it durable. Steps that finish together therefore
//! share a sync, and a step's "succeeded" line rides on the sync of the next step's "started".

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::{format_line, now_rfc3339, sha256_hex};

pub struct LogWriter {
    shared: Arc<Shared>,
    durable: tokio::sync::watch::Receiver<u64>,
    syncer: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    durable: tokio::sync::watch::Sender<u64>,
    fsyncs: AtomicU64,
}

struct State {
    file: File,
    next_seq: u64,
    prev: String,
    /// Highest seq written to the file.
    written: u64,
    /// Highest seq someone is waiting to see durable.
    wanted: u64,
    failed: Option<String>,
    closing: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct WriterStats {
    pub lines: u64,
    pub fsyncs: u64,
}

impl LogWriter {
    /// Opens a log for appending after `last_seq` lines whose last line hashes to `prev`.
    pub fn open(path: &Path, last_seq: u64, prev: String) -> std::io::Result<LogWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let sync_file = file.try_clone()?;
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
                wanted: last_seq,
                failed: None,
                closing: false,
            }),
            wake: Condvar::new(),
            durable: tx,
            fsyncs: AtomicU64::new(0),
        });
        let for_thread = shared.clone();
        let syncer = std::thread::Builder::new()
            .name("runlog-sync".into())
            .spawn(move || sync_loop(&for_thread, &sync_file))?;
        Ok(LogWriter {
            shared,
            durable: rx,
            syncer: Some(syncer),
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
            let msg = format!("cannot append to the run log: {e}");
            st.failed = Some(msg.clone());
            return Err(msg);
        }
        bytes.pop();
        st.prev = sha256_hex(&bytes);
        st.next_seq += 1;
        st.written = seq;
        Ok((seq, ts))
    }

    /// Waits until every line up to `seq` is on disk.
    pub async fn durable(&self, seq: u64) -> Result<(), String> {
        if *self.durable.borrow() >= seq {
            return Ok(());
        }
        {
            let mut st = self.shared.state.lock().expect("log state lock");
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            st.wanted = st.wanted.max(seq);
        }
        self.shared.wake.notify_one();
        let mut rx = self.durable.clone();
        let waited = rx.wait_for(|d| *d >= seq).await;
        let st = self.shared.state.lock().expect("log state lock");
        match (&st.failed, waited) {
            (Some(e), _) => Err(e.clone()),
            (None, Ok(_)) => Ok(()),
            (None, Err(_)) => Err("the run log's sync thread stopped".into()),
        }
    }

    /// The same, for code that is not async (the CLI's `approve`).
    pub fn durable_blocking(&self, seq: u64) -> Result<(), String> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(self.durable(seq))
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

impl Drop for LogWriter {
    fn drop(&mut self) {
        {
            let mut st = self.shared.state.lock().expect("log state lock");
            st.closing = true;
            st.wanted = st.written;
        }
        self.shared.wake.notify_one();
        if let Some(t) = self.syncer.take() {
            let _ = t.join();
        }
    }
}

fn sync_loop(shared: &Shared, file: &File) {
    let mut synced = *shared.durable.borrow();
    loop {
        let target = {
            let mut st = shared.state.lock().expect("log state lock");
            while st.wanted <= synced && !st.closing {
                st = shared.wake.wait(st).expect("log state lock");
            }
            if st.closing && st.written <= synced {
                return;
            }
            // Everything written so far, not just what was asked for: later lines share this sync.
            st.written
        };
        let result = file.sync_data();
        shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                synced = target;
                shared.durable.send_replace(target);
            }
            Err(e) => {
                shared.state.lock().expect("log state lock").failed =
                    Some(format!("cannot sync the run log to disk: {e}"));
                // Wake every waiter so it sees the failure instead of waiting forever.
                shared.durable.send_replace(u64::MAX);
                return;
            }
        }
    }
}
