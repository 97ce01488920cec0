//! A state store in memory, for the engine's tests: runs, logs, heads, the driver lock and
//! locks, with the folder store's rules. A lock's liveness is a flag that a crash (dropping the
//! lock set without pausing or releasing it) clears, as the kernel drops a dead process's flock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::{Holder, LockError, LockState};
use crate::runlog::{Head, LogWriter, MemLog};

#[derive(Default)]
pub struct Memory {
    /// Who the store says is acting; tests set it.
    pub who: Mutex<String>,
    runs: Mutex<BTreeMap<String, Arc<MemRun>>>,
    locks: Arc<LockTable>,
}

/// Each lock's last holder, and whether that holder's process still lives.
type LockTable = Mutex<BTreeMap<String, (Holder, Arc<AtomicBool>)>>;

pub struct MemRun {
    /// The log's bytes; tests cut them to simulate a crash.
    pub log: Arc<Mutex<Vec<u8>>>,
    runbook: Vec<u8>,
    head: Mutex<Option<Head>>,
    published: AtomicBool,
    driven: Arc<AtomicBool>,
}

/// Keeps a run to its driver while alive.
pub struct MemDriver(Arc<AtomicBool>);

impl Drop for MemDriver {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

pub struct MemLocks {
    held: Vec<(String, Arc<AtomicBool>)>,
    holder: Holder,
    pub taken_over: Vec<(String, String, u32)>,
    table: Arc<LockTable>,
}

impl MemLocks {
    /// Records the holder's new state; the process lets go of its liveness either way.
    pub fn set_state(mut self, state: LockState) {
        self.holder.state = state;
        let mut table = self.table.lock().expect("locks lock");
        for (name, _) in &self.held {
            if let Some(entry) = table.get_mut(name) {
                entry.0 = self.holder.clone();
            }
        }
    }
}

impl Drop for MemLocks {
    /// Whether paused, released or crashed: the liveness goes with the process.
    fn drop(&mut self) {
        for (_, live) in &self.held {
            live.store(false, Ordering::SeqCst);
        }
    }
}

impl Memory {
    pub fn identity(&self) -> String {
        let who = self.who.lock().expect("who lock").clone();
        if who.is_empty() { "tester".into() } else { who }
    }

    fn get(&self, run: &str) -> Result<Arc<MemRun>, String> {
        self.runs
            .lock()
            .expect("runs lock")
            .get(run)
            .filter(|r| r.published.load(Ordering::SeqCst))
            .cloned()
            .ok_or_else(|| format!("no run `{run}` in memory"))
    }

    /// A run, for tests that cut or read its log.
    pub fn run(&self, run: &str) -> Arc<MemRun> {
        self.get(run).expect("the run exists")
    }

    pub fn create_run(&self, run: &str, runbook: &[u8]) -> LogWriter {
        let r = Arc::new(MemRun {
            log: Arc::default(),
            runbook: runbook.to_vec(),
            head: Mutex::new(Some(Head::created(run))),
            published: AtomicBool::new(false),
            driven: Arc::default(),
        });
        let writer = LogWriter::Memory(MemLog::new(r.log.clone(), 0, crate::runlog::genesis(run)));
        self.runs
            .lock()
            .expect("runs lock")
            .insert(run.to_string(), r);
        writer
    }

    pub fn publish_run(&self, run: &str) -> Result<(), String> {
        let runs = self.runs.lock().expect("runs lock");
        let r = runs.get(run).ok_or("no such run")?;
        r.published.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub fn log_writer(&self, run: &str, last_seq: u64, prev: String) -> Result<LogWriter, String> {
        let r = self.get(run)?;
        Ok(LogWriter::Memory(MemLog::new(
            r.log.clone(),
            last_seq,
            prev,
        )))
    }

    pub fn exists(&self, run: &str) -> Result<(), String> {
        self.get(run).map(drop)
    }

    pub fn drive(&self, run: &str) -> Result<MemDriver, String> {
        let r = self.get(run)?;
        if r.driven.swap(true, Ordering::SeqCst) {
            return Err(format!(
                "run {run} is being driven by another lifeboat process"
            ));
        }
        Ok(MemDriver(r.driven.clone()))
    }

    pub fn runs(&self) -> Vec<String> {
        let runs = self.runs.lock().expect("runs lock");
        let mut ids: Vec<String> = runs
            .iter()
            .filter(|(_, r)| r.published.load(Ordering::SeqCst))
            .map(|(id, _)| id.clone())
            .collect();
        ids.reverse();
        ids
    }

    pub fn read_log(&self, run: &str) -> Result<Vec<u8>, String> {
        Ok(self.get(run)?.log.lock().expect("log lock").clone())
    }

    pub fn cut_log(&self, run: &str, keep: u64) -> Result<(), String> {
        self.get(run)?
            .log
            .lock()
            .expect("log lock")
            .truncate(keep as usize);
        Ok(())
    }

    pub fn runbook(&self, run: &str) -> Result<Vec<u8>, String> {
        Ok(self.get(run)?.runbook.clone())
    }

    pub fn head(&self, run: &str) -> Result<Option<Head>, String> {
        Ok(self.get(run)?.head.lock().expect("head lock").clone())
    }

    /// As if someone had deleted the head anchor.
    pub fn delete_head(&self, run: &str) {
        *self.run(run).head.lock().expect("head lock") = None;
    }

    /// As if a process had started appending and then crashed: the head is left open.
    pub fn reopen_head(&self, run: &str) {
        if let Some(h) = self.run(run).head.lock().expect("head lock").as_mut() {
            h.open = true;
        }
    }

    pub fn write_head(&self, run: &str, head: &Head) -> Result<(), String> {
        *self.get(run)?.head.lock().expect("head lock") = Some(head.clone());
        Ok(())
    }

    /// Takes every named lock, or none, by the folder store's rules.
    pub fn acquire(&self, names: &[String], me: &Holder) -> Result<MemLocks, LockError> {
        let mut table = self.locks.lock().expect("locks lock");
        let mut taken_over = Vec::new();
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort();
        sorted.dedup();
        for name in &sorted {
            if let Some((holder, live)) = table.get(name.as_str()) {
                if live.load(Ordering::SeqCst) {
                    return Err(LockError::Held {
                        name: name.to_string(),
                        holder: holder.clone(),
                    });
                }
                taken_over.extend(super::take_over(name, Some(holder.clone()), me)?);
            }
        }
        let mut held = Vec::new();
        for name in sorted {
            let live = Arc::new(AtomicBool::new(true));
            table.insert(name.clone(), (me.clone(), live.clone()));
            held.push((name.clone(), live));
        }
        Ok(MemLocks {
            held,
            holder: me.clone(),
            taken_over,
            table: self.locks.clone(),
        })
    }
}
