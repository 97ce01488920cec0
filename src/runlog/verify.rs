//! Checking a log's chain, and the head anchor written when a run stops.
//!
//! The chain alone catches any change to a line but the last, and any removal, insertion or
//! reordering before it. The head file (`seq` and hash of the last line, written when a run
//! stops) catches a rewritten or removed last line. Someone who rewrites the whole chain and the
//! head is caught only by an anchor kept elsewhere: the final hash printed at the end of each run.

use std::path::Path;

use super::{GENESIS, sha256_hex, split_hash};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub lines: u64,
    /// SHA-256 of the last line: the value to keep elsewhere as an anchor.
    pub last_hash: String,
    /// The first bad line (1-based) and what is wrong with it; `None` when intact.
    pub first_bad: Option<(u64, String)>,
    /// Lines after the head anchor: written by a run that has not stopped cleanly yet (running or
    /// crashed). They are chained, but nothing outside the log vouches for them.
    pub unanchored: u64,
}

impl Verdict {
    pub fn intact(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Checks the log's bytes against the head, if there is one.
pub fn verify(text: &[u8], head: Option<&Head>) -> Verdict {
    let mut prev = GENESIS.to_string();
    let mut n = 0u64;
    let mut bad = None;
    let mut rest = text;
    while !rest.is_empty() {
        n += 1;
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => {
                bad = Some((
                    n,
                    "the last line is incomplete (written during a crash?)".into(),
                ));
                break;
            }
        };
        rest = after;
        if let Err(why) = check_line(line, n, &prev) {
            bad = Some((n, why));
            break;
        }
        prev = sha256_hex(line);
    }
    let lines = n;
    let mut unanchored = 0;
    if bad.is_none()
        && let Some(h) = head
    {
        if h.seq > lines {
            bad = Some((
                lines.max(1),
                format!(
                    "the log ends at line {lines}, but it was {} lines long when its run stopped: lines were removed",
                    h.seq
                ),
            ));
        } else if h.seq > 0 {
            let line = nth_line(text, h.seq);
            if sha256_hex(line) != h.hash {
                bad = Some((
                    h.seq,
                    "this line is not the one recorded as the last when the run stopped".into(),
                ));
            } else {
                unanchored = lines - h.seq;
            }
        }
    } else if bad.is_none() {
        unanchored = lines;
    }
    Verdict {
        lines,
        last_hash: prev,
        first_bad: bad,
        unanchored,
    }
}

fn nth_line(text: &[u8], n: u64) -> &[u8] {
    text.split(|&b| b == b'\n')
        .nth((n - 1) as usize)
        .unwrap_or(&[])
}

fn check_line(line: &[u8], n: u64, prev: &str) -> Result<(), String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let Some((covered, claimed)) = split_hash(text) else {
        return Err("no `hash` member at the end of the line".into());
    };
    if sha256_hex(covered.as_bytes()) != claimed {
        return Err("the line was changed: its hash does not match its content".into());
    }
    if value.get("hash").and_then(|h| h.as_str()) != Some(claimed) {
        return Err("the line has more than one `hash` member".into());
    }
    match value.get("seq").and_then(|s| s.as_u64()) {
        Some(s) if s == n => {}
        Some(s) => {
            return Err(format!(
                "seq is {s}, expected {n}: lines were removed, inserted or reordered"
            ));
        }
        None => return Err("no `seq`".into()),
    }
    if value.get("prev").and_then(|p| p.as_str()) != Some(prev) {
        return Err(
            "`prev` does not match the line before: a line before it was changed, removed, inserted or reordered"
                .into(),
        );
    }
    if value.get("event").and_then(|e| e.as_str()).is_none() {
        return Err("no `event`".into());
    }
    Ok(())
}

pub fn read_head(path: &Path) -> std::io::Result<Option<Head>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the head file atomically and durably.
pub fn write_head(path: &Path, head: &Head) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(
            serde_json::to_string(head)
                .expect("head serializes")
                .as_bytes(),
        )?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::format_line;
    use super::*;

    /// A finished log of `n` lines and its head.
    fn log(n: u64) -> (Vec<String>, Head) {
        let mut prev = GENESIS.to_string();
        let mut lines = Vec::new();
        for seq in 1..=n {
            let mut ev = serde_json::Map::new();
            ev.insert("event".into(), "step_succeeded".into());
            ev.insert("step".into(), format!("s{seq}").into());
            ev.insert(
                "outputs".into(),
                serde_json::json!({"n": seq, "text": "a,\"b\"}"}),
            );
            let line = format_line(seq, "2026-11-21T00:00:00.000Z", &ev, &prev);
            prev = sha256_hex(line.as_bytes());
            lines.push(line);
        }
        (lines, Head { seq: n, hash: prev })
    }

    fn join(lines: &[String]) -> Vec<u8> {
        lines
            .iter()
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    }

    /// Recomputes a line's own hash after a change, as a careful forger would.
    fn rehash(line: &str) -> String {
        let (covered, _) = split_hash(line).unwrap();
        let mut v: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&covered).unwrap();
        let seq = v.shift_remove("seq").unwrap().as_u64().unwrap();
        let ts = v.shift_remove("ts").unwrap();
        let prev = v.shift_remove("prev").unwrap();
        format_line(seq, ts.as_str().unwrap(), &v, prev.as_str().unwrap())
    }

    #[test]
    fn an_untouched_log_is_intact() {
        let (lines, head) = log(5);
        let v = verify(&join(&lines), Some(&head));
        assert_eq!(v.first_bad, None);
        assert_eq!((v.lines, v.unanchored), (5, 0));
        assert_eq!(v.last_hash, head.hash);
    }

    /// docs/run-log.md: every single-line modification of a finished log is detected, and
    /// the verdict names the line where the chain first breaks.
    #[test]
    fn every_single_line_modification_is_detected() {
        let n = 8;
        let (lines, head) = log(n);
        let mut cases = 0;
        for i in 0..n as usize {
            let line_no = i as u64 + 1;
            let mut variants: Vec<(String, Vec<String>, u64)> = Vec::new();
            // Every byte position changed, hash left as it was.
            for pos in 0..lines[i].len() {
                let mut bytes = lines[i].clone().into_bytes();
                bytes[pos] = if bytes[pos] == b'x' { b'y' } else { b'x' };
                let mut l = lines.clone();
                l[i] = String::from_utf8_lossy(&bytes).into_owned();
                variants.push((format!("byte {pos} changed"), l, line_no));
            }
            // A value changed and the line's hash recomputed: the next line's `prev` (or, for
            // the last line, the head) gives it away.
            let mut l = lines.clone();
            l[i] = rehash(&lines[i].replace(&format!("\"s{line_no}\""), "\"evil\""));
            variants.push((
                "value changed, hash recomputed".into(),
                l,
                if i + 1 == n as usize {
                    line_no
                } else {
                    line_no + 1
                },
            ));
            // Removed.
            let mut l = lines.clone();
            l.remove(i);
            variants.push(("removed".into(), l, line_no.min(n - 1).max(1)));
            // Duplicated (an insertion of a valid-looking line).
            let mut l = lines.clone();
            l.insert(i, lines[i].clone());
            variants.push(("duplicated".into(), l, line_no + 1));
            // Swapped with the next.
            if i + 1 < n as usize {
                let mut l = lines.clone();
                l.swap(i, i + 1);
                variants.push(("swapped with the next".into(), l, line_no));
            }
            for (what, l, expect_line) in variants {
                let v = verify(&join(&l), Some(&head));
                let Some((bad, why)) = v.first_bad else {
                    panic!("line {line_no}: {what} was not detected");
                };
                assert!(!why.is_empty());
                if !what.starts_with("byte") {
                    assert_eq!(bad, expect_line, "line {line_no}: {what}: {why}");
                } else {
                    assert_eq!(bad, line_no, "line {line_no}: {what}: {why}");
                }
                cases += 1;
            }
        }
        assert!(cases > 1000, "only {cases} cases");
        // Appending a forged line after the end is caught by neither chain nor head alone, but
        // it is reported as unanchored, never as covered by the head.
        let mut l = lines.clone();
        l.push(rehash(
            &lines[0]
                .replace("\"seq\":1", &format!("\"seq\":{}", n + 1))
                .replace(GENESIS, &head.hash),
        ));
        let v = verify(&join(&l), Some(&head));
        assert!(v.first_bad.is_some() || v.unanchored == 1);
    }

    #[test]
    fn a_torn_last_line_is_reported() {
        let (lines, _) = log(3);
        let mut bytes = join(&lines);
        bytes.truncate(bytes.len() - 10);
        let v = verify(&bytes, None);
        assert_eq!(v.first_bad.unwrap().0, 3);
    }
}
