//! Checking a log's chain against its run and its head anchor.
//!
//! The chain catches any change to a line but the last, and any removal, insertion or
//! reordering before it. Line 1 binds the log to its run: its `prev` is [`genesis`] of the run's
//! id and it is that run's `run_started`, so a log moved to another run's place shows. The head
//! anchor, kept by the store outside the run's own files, holds the seq and hash of the last line
//! and whether a process is writing after it (`open`): it is written open before a process
//! appends, and closed with the last line when it stops. So a removed or rewritten last line
//! shows, and so do lines added after a run stopped; lines after an open head are those of a
//! process that is running or crashed, which `resume` finishes. Someone who rewrites the whole
//! chain and the head is caught only by a hash kept elsewhere (`lifeboat verify --expect`).

use std::path::Path;

use super::{GENESIS, sha256_hex, split_hash};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
    /// A process is appending after this line (or crashed while it was).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub lines: u64,
    /// SHA-256 of the last line: the value to keep elsewhere as an anchor.
    pub last_hash: String,
    /// The first bad line (1-based) and what is wrong with it; `None` when intact.
    pub first_bad: Option<(u64, String)>,
    /// Lines after an open head anchor: written by a run that has not stopped cleanly yet
    /// (running or crashed). They are chained, but nothing outside the log vouches for them.
    pub unanchored: u64,
}

impl Head {
    /// A new run's: nothing written yet, its creator about to append.
    pub fn created(run: &str) -> Head {
        Head {
            seq: 0,
            hash: genesis(run),
            open: true,
        }
    }
}

impl Verdict {
    pub fn intact(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// The `prev` of a run's first line: its id, hashed, so that the chain belongs to that run.
pub fn genesis(run: &str) -> String {
    sha256_hex(format!("lifeboat run {run}").as_bytes())
}

/// Checks the log of run `run` against its head anchor. A log without a head is tampered with
/// (every run gets one when it is created), unless it predates the binding of logs to runs.
pub fn verify(run: &str, text: &[u8], head: Option<&Head>) -> Verdict {
    let mut prev = String::new();
    let mut legacy = false;
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
        if n == 1 {
            match first_line(line, run) {
                Ok(l) => {
                    legacy = l;
                    prev = if l { GENESIS.to_string() } else { genesis(run) };
                }
                Err(why) => {
                    bad = Some((1, why));
                    break;
                }
            }
        }
        if let Err(why) = check_line(line, n, &prev) {
            bad = Some((n, why));
            break;
        }
        prev = sha256_hex(line);
    }
    let lines = n;
    let mut unanchored = 0;
    if bad.is_none() {
        match head {
            None if legacy || lines == 0 => unanchored = lines,
            None => {
                bad = Some((
                    lines,
                    "the run's head anchor is missing (the store writes one when a run is created): it was deleted".into(),
                ))
            }
            Some(h) if h.seq > lines => {
                bad = Some((
                    lines.max(1),
                    format!(
                        "the log ends at line {lines}, but its head anchor says {}: lines were removed",
                        h.seq
                    ),
                ))
            }
            Some(h) if !h.open && h.seq < lines => {
                bad = Some((
                    h.seq + 1,
                    format!(
                        "{} line(s) after line {}, where the run stopped: they were added by something other than lifeboat",
                        lines - h.seq,
                        h.seq
                    ),
                ))
            }
            Some(h) if h.seq > 0 && sha256_hex(nth_line(text, h.seq)) != h.hash => {
                bad = Some((
                    h.seq,
                    "this line is not the one recorded as the last when the run stopped".into(),
                ))
            }
            Some(h) => unanchored = lines - h.seq,
        }
    }
    Verdict {
        lines,
        last_hash: if lines == 0 { genesis(run) } else { prev },
        first_bad: bad,
        unanchored,
    }
}

/// Whether the log's last line is the one whose hash was kept elsewhere (`--expect`).
pub fn expect(text: &[u8], verdict: &Verdict, hash: &str) -> Result<(), String> {
    if verdict.last_hash == hash {
        return Ok(());
    }
    let at = text
        .split(|&b| b == b'\n')
        .position(|l| !l.is_empty() && sha256_hex(l) == hash);
    Err(match at {
        Some(i) => format!(
            "the expected hash is line {}'s; {} line(s) follow it",
            i + 1,
            verdict.lines - (i as u64 + 1)
        ),
        None => {
            "no line of this log has the expected hash: it is not the log that hash was kept for"
                .into()
        }
    })
}

/// Line 1 must be this run's `run_started`. `Ok(true)`: a log from before logs were bound to
/// their run (its `prev` is all zeros).
fn first_line(line: &[u8], run: &str) -> Result<bool, String> {
    let v: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON object: {e}"))?;
    if v.get("event").and_then(|e| e.as_str()) != Some("run_started") {
        return Err("the log does not begin with run_started".into());
    }
    match v.get("run").and_then(|r| r.as_str()) {
        Some(r) if r == run => {}
        Some(other) => {
            return Err(format!(
                "this is the log of run {other}, not of run {run}: it was moved or swapped"
            ));
        }
        None => return Err("run_started names no run".into()),
    }
    Ok(v.get("prev").and_then(|p| p.as_str()) == Some(GENESIS))
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
    let body = serde_json::to_string(head).expect("head serializes");
    crate::files::replace(path, body.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::super::format_line;
    use super::*;

    const RUN: &str = "20261130T120000Z-abcdef";

    /// A finished log of `n` lines of run RUN (a `run_started`, then steps) and its closed head.
    /// Each line holds `"s<seq>"`, for tests that change a value.
    fn log(n: u64) -> (Vec<String>, Head) {
        log_of(RUN, &genesis(RUN), n)
    }

    fn log_of(run: &str, first_prev: &str, n: u64) -> (Vec<String>, Head) {
        let mut prev = first_prev.to_string();
        let mut lines = Vec::new();
        for seq in 1..=n {
            let mut ev = serde_json::Map::new();
            if seq == 1 {
                ev.insert("event".into(), "run_started".into());
                ev.insert("run".into(), run.into());
                ev.insert("runbook".into(), "s1".into());
            } else {
                ev.insert("event".into(), "step_succeeded".into());
                ev.insert("step".into(), format!("s{seq}").into());
            }
            ev.insert(
                "outputs".into(),
                serde_json::json!({"n": seq, "text": "a,\"b\"}"}),
            );
            let line = format_line(seq, "2026-11-21T00:00:00.000Z", &ev, &prev);
            prev = sha256_hex(line.as_bytes());
            lines.push(line);
        }
        (
            lines,
            Head {
                seq: n,
                hash: prev,
                open: false,
            },
        )
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
        let v = verify(RUN, &join(&lines), Some(&head));
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
                let v = verify(RUN, &join(&l), Some(&head));
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
        // A forged line appended after the end, well chained: the closed head gives it away.
        let mut l = lines.clone();
        l.push(rehash(
            &lines[1]
                .replace("\"seq\":2", &format!("\"seq\":{}", n + 1))
                .replace(&sha256_hex(lines[0].as_bytes()), &head.hash),
        ));
        let v = verify(RUN, &join(&l), Some(&head));
        assert_eq!(v.first_bad.map(|(line, _)| line), Some(n + 1));
    }

    /// The attacks on a log that a chain alone cannot see, each with its variants.
    #[test]
    fn a_log_is_bound_to_its_run_and_its_head() {
        let (lines, head) = log(5);
        let text = join(&lines);
        let bad = |run: &str, text: &[u8], head: Option<&Head>| {
            verify(run, text, head).first_bad.map(|(_, why)| why)
        };
        // Truncated, with its head deleted or left: both caught.
        for keep in 1..5 {
            let cut = join(&lines[..keep]);
            assert!(
                bad(RUN, &cut, None)
                    .unwrap()
                    .contains("head anchor is missing")
            );
            assert!(
                bad(RUN, &cut, Some(&head))
                    .unwrap()
                    .contains("lines were removed")
            );
        }
        // Another run's log (and head) put in this run's place.
        let (other, other_head) = log_of(
            "20261129T000000Z-999999",
            &genesis("20261129T000000Z-999999"),
            5,
        );
        let why = bad(RUN, &join(&other), Some(&other_head)).unwrap();
        assert!(why.contains("it was moved or swapped"), "{why}");
        // Its first line rewritten to claim this run: the chain's genesis is the other run's.
        let forged = rehash(&other[0].replace("20261129T000000Z-999999", RUN));
        let mut l = other.clone();
        l[0] = forged;
        assert!(bad(RUN, &join(&l), Some(&other_head)).is_some());
        // Lines appended after a closed head, one to many.
        for extra in 1..4 {
            let (longer, _) = log(5 + extra);
            let why = bad(RUN, &join(&longer), Some(&head)).unwrap();
            assert!(
                why.contains("added by something other than lifeboat"),
                "{why}"
            );
        }
        // After an open head they are a running or crashed process's: unanchored, not bad.
        let open = Head {
            open: true,
            ..head.clone()
        };
        let (longer, _) = log(8);
        let v = verify(RUN, &join(&longer), Some(&open));
        assert_eq!((v.first_bad, v.unanchored), (None, 3));
        // A new run's head, before anything is written.
        assert!(verify(RUN, b"", Some(&Head::created(RUN))).intact());
        assert!(bad(RUN, &text, Some(&head)).is_none());
    }

    /// Logs written before they were bound to their runs (all-zero genesis) still verify, with
    /// or without a head; they are still checked to be this run's.
    #[test]
    fn a_log_from_before_the_binding_still_verifies() {
        let (lines, head) = log_of(RUN, GENESIS, 4);
        assert!(verify(RUN, &join(&lines), Some(&head)).intact());
        let v = verify(RUN, &join(&lines), None);
        assert_eq!((v.first_bad, v.unanchored), (None, 4));
        assert!(!verify("20261129T000000Z-999999", &join(&lines), None).intact());
    }

    #[test]
    fn expect_pins_the_last_line() {
        let (lines, head) = log(5);
        let text = join(&lines);
        let v = verify(RUN, &text, Some(&head));
        assert_eq!(expect(&text, &v, &head.hash), Ok(()));
        let third = sha256_hex(lines[2].as_bytes());
        assert_eq!(
            expect(&text, &v, &third),
            Err("the expected hash is line 3's; 2 line(s) follow it".into())
        );
        assert!(
            expect(&text, &v, &"0".repeat(64))
                .unwrap_err()
                .contains("no line")
        );
    }

    #[test]
    fn a_torn_last_line_is_reported() {
        let (lines, _) = log(3);
        let mut bytes = join(&lines);
        bytes.truncate(bytes.len() - 10);
        let v = verify(RUN, &bytes, None);
        assert_eq!(v.first_bad.unwrap().0, 3);
    }
}
