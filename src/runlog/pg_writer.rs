//! The run log in the PostgreSQL state store. Appends are buffered in memory; durability is a
//! commit, and the first waiter commits every line buffered so far in one multi-row INSERT — the
//! same group commit as the file log, with a transaction instead of an fsync.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{WriterStats, format_line, now_rfc3339, sha256_hex};

pub struct PgLog {
    client: tokio_postgres::Client,
    run: String,
    state: Mutex<State>,
    durable_tx: tokio::sync::watch::Sender<u64>,
    durable_rx: tokio::sync::watch::Receiver<u64>,
    commits: AtomicU64,
}

struct State {
    next_seq: u64,
    prev: String,
    pending: Vec<(i64, String)>,
    written: u64,
    syncing: bool,
    failed: Option<String>,
}

impl PgLog {
    /// `client` is the writer's own connection (its transactions must not mix with others').
    pub fn new(client: tokio_postgres::Client, run: &str, last_seq: u64, prev: String) -> PgLog {
        let (tx, rx) = tokio::sync::watch::channel(last_seq);
        PgLog {
            client,
            run: run.to_string(),
            state: Mutex::new(State {
                next_seq: last_seq + 1,
                prev,
                pending: Vec::new(),
                written: last_seq,
                syncing: false,
                failed: None,
            }),
            durable_tx: tx,
            durable_rx: rx,
            commits: AtomicU64::new(0),
        }
    }

    pub fn append(
        &self,
        event: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(u64, String), String> {
        let mut st = self.state.lock().expect("log state lock");
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        let seq = st.next_seq;
        let ts = now_rfc3339();
        let line = format_line(seq, &ts, event, &st.prev);
        st.prev = sha256_hex(line.as_bytes());
        st.pending.push((seq as i64, line));
        st.next_seq += 1;
        st.written = seq;
        Ok((seq, ts))
    }

    pub async fn durable(&self, seq: u64) -> Result<(), String> {
        let mut rx = self.durable_rx.clone();
        loop {
            if *rx.borrow_and_update() >= seq {
                return match &self.state.lock().expect("log state lock").failed {
                    Some(e) => Err(e.clone()),
                    None => Ok(()),
                };
            }
            let batch = {
                let mut st = self.state.lock().expect("log state lock");
                if let Some(e) = &st.failed {
                    return Err(e.clone());
                }
                if st.syncing {
                    None
                } else {
                    st.syncing = true;
                    Some((std::mem::take(&mut st.pending), st.written))
                }
            };
            let Some((lines, upto)) = batch else {
                if rx.changed().await.is_err() {
                    return Err("the run log was closed".into());
                }
                continue;
            };
            let (seqs, texts): (Vec<i64>, Vec<String>) = lines.into_iter().unzip();
            let result = self
                .client
                .execute(
                    "insert into lifeboat_log(run, seq, line) select $1, s, l from unnest($2::bigint[], $3::text[]) as t(s, l)",
                    &[&self.run, &seqs, &texts],
                )
                .await;
            self.commits.fetch_add(1, Ordering::Relaxed);
            let mut st = self.state.lock().expect("log state lock");
            st.syncing = false;
            match result {
                Ok(_) => {
                    drop(st);
                    self.durable_tx.send_replace(upto);
                }
                Err(e) => {
                    let msg = format!("cannot commit the run log to the state store: {e}");
                    st.failed = Some(msg.clone());
                    drop(st);
                    self.durable_tx.send_replace(u64::MAX);
                    return Err(msg);
                }
            }
        }
    }

    pub fn last(&self) -> (u64, String) {
        let st = self.state.lock().expect("log state lock");
        (st.next_seq - 1, st.prev.clone())
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            lines: self.state.lock().expect("log state lock").written,
            fsyncs: self.commits.load(Ordering::Relaxed),
        }
    }
}
