//! A run log in memory, for the engine's tests: the same lines and hashes as the file log,
//! durable as soon as written. A test "crashes" a run by cutting the bytes anywhere.

use std::sync::{Arc, Mutex};

use super::{WriterStats, format_line, now_rfc3339, sha256_hex};

pub struct MemLog {
    bytes: Arc<Mutex<Vec<u8>>>,
    /// The next seq and the hash of the last line.
    state: Mutex<(u64, String)>,
}

impl MemLog {
    /// Appends to `bytes` after `last_seq` lines whose last line hashes to `prev`.
    pub fn new(bytes: Arc<Mutex<Vec<u8>>>, last_seq: u64, prev: String) -> MemLog {
        MemLog {
            bytes,
            state: Mutex::new((last_seq + 1, prev)),
        }
    }

    pub fn append(
        &self,
        event: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(u64, String), String> {
        let mut st = self.state.lock().expect("log state lock");
        let (seq, ts) = (st.0, now_rfc3339());
        let line = format_line(seq, &ts, event, &st.1);
        st.1 = sha256_hex(line.as_bytes());
        st.0 += 1;
        let mut bytes = self.bytes.lock().expect("log bytes lock");
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        Ok((seq, ts))
    }

    pub fn last(&self) -> (u64, String) {
        let st = self.state.lock().expect("log state lock");
        (st.0 - 1, st.1.clone())
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            lines: self.last().0,
            fsyncs: 0,
        }
    }
}
