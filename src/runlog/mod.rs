//! The run log (docs/run-log.md): append-only JSON Lines, one event per line, each line chained to the one
//! before by SHA-256. This module knows lines and hashes, not what the events mean.
//!
//! A line is `{"seq":N,"ts":"…","event":"…",…fields…,"prev":"<hex>","hash":"<hex>"}` where
//! `prev` is the SHA-256 of the whole previous line (64 zeros for the first) and `hash` is the
//! SHA-256 of the line's own text with the `,"hash":"…"` member cut out. Both are checked on the
//! exact bytes, never on re-serialized JSON, so the check cannot depend on how a parser formats
//! numbers.

#[cfg(test)]
mod memory;
mod pg_writer;
mod verify;
mod writer;

#[cfg(test)]
pub use memory::MemLog;
pub use pg_writer::PgLog;
pub use verify::{Head, Verdict, expect, genesis, read_head, verify, write_head};
pub use writer::{FileLog, WriterStats};

/// Where a run's lines go: a file (fsync), or the PostgreSQL state store (commit).
pub enum LogWriter {
    File(FileLog),
    Pg(Box<PgLog>),
    #[cfg(test)]
    Memory(MemLog),
}

impl LogWriter {
    /// A file log, appended after `last_seq` lines whose last line hashes to `prev`.
    pub fn open(path: &std::path::Path, last_seq: u64, prev: String) -> std::io::Result<LogWriter> {
        FileLog::open(path, last_seq, prev).map(LogWriter::File)
    }

    /// Writes (or buffers) one event and returns its seq and time; not yet durable.
    pub fn append(
        &self,
        event: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(u64, String), String> {
        match self {
            LogWriter::File(f) => f.append(event),
            LogWriter::Pg(p) => p.append(event),
            #[cfg(test)]
            LogWriter::Memory(m) => m.append(event),
        }
    }

    /// Waits until every line up to `seq` is durable: fsynced, or committed.
    pub async fn durable(&self, seq: u64) -> Result<(), String> {
        match self {
            LogWriter::File(f) => f.durable(seq).await,
            LogWriter::Pg(p) => p.durable(seq).await,
            #[cfg(test)]
            LogWriter::Memory(_) => Ok(()),
        }
    }

    pub fn last(&self) -> (u64, String) {
        match self {
            LogWriter::File(f) => f.last(),
            LogWriter::Pg(p) => p.last(),
            #[cfg(test)]
            LogWriter::Memory(m) => m.last(),
        }
    }

    pub fn stats(&self) -> WriterStats {
        match self {
            LogWriter::File(f) => f.stats(),
            LogWriter::Pg(p) => p.stats(),
            #[cfg(test)]
            LogWriter::Memory(m) => m.stats(),
        }
    }
}

use sha2::{Digest, Sha256};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_MEMBER: &str = ",\"hash\":\"";

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex, as SHA-256 sums are written everywhere in lifeboat.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Builds one line (without the newline) from an event's JSON object.
pub fn format_line(
    seq: u64,
    ts: &str,
    event: &serde_json::Map<String, serde_json::Value>,
    prev: &str,
) -> String {
    let mut obj = serde_json::Map::with_capacity(event.len() + 4);
    obj.insert("seq".into(), seq.into());
    obj.insert("ts".into(), ts.into());
    for (k, v) in event {
        obj.insert(k.clone(), v.clone());
    }
    obj.insert("prev".into(), prev.into());
    let mut body = serde_json::to_string(&obj).expect("a JSON map serializes");
    let hash = sha256_hex(body.as_bytes());
    body.pop(); // the closing brace
    body.push_str(HASH_MEMBER);
    body.push_str(&hash);
    body.push_str("\"}");
    body
}

/// Splits a line into the text its hash covers and the hash it claims.
fn split_hash(line: &str) -> Option<(String, &str)> {
    let rest = line.strip_suffix("\"}")?;
    let at = rest.rfind(HASH_MEMBER)?;
    let claimed = &rest[at + HASH_MEMBER.len()..];
    if claimed.len() != 64 || !claimed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut covered = rest[..at].to_string();
    covered.push('}');
    Some((covered, claimed))
}

/// A log timestamp (RFC 3339) as milliseconds since the epoch: integers, so spans computed from
/// them have no float noise (0.114, not 0.11400008201599121).
pub fn unix_ms(ts: &str) -> Option<i64> {
    ts.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// The current time as the log writes it: RFC 3339, UTC, milliseconds.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_hashes_what_it_says() {
        let mut ev = serde_json::Map::new();
        ev.insert("event".into(), "run_started".into());
        ev.insert("note".into(), "ünïcode \"quoted\"".into());
        let line = format_line(1, "2026-11-21T00:00:00.000Z", &ev, GENESIS);
        let (covered, claimed) = split_hash(&line).unwrap();
        assert_eq!(sha256_hex(covered.as_bytes()), claimed);
        assert!(!covered.contains("\"hash\""));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["seq"], 1);
        assert_eq!(v["prev"], GENESIS);
        assert_eq!(v["hash"], claimed);
    }
}
