//! Prometheus text exposition of a state store's history, for node_exporter's textfile collector:
//! the alert that matters most in a backup system is "backups stopped succeeding", and it needs
//! the time of the last success per runbook. Pure: runs in, text out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::runlog::unix_ms;

/// What the metrics need of one run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub runbook: String,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Set for finished drills.
    pub drill: Option<DrillSummary>,
    /// What its steps said about how recent a recovery could be (`pgbackrest.info`'s newest
    /// archived WAL): (step, what, unix ms).
    pub points: Vec<(String, &'static str, i64)>,
    /// What its backup steps stored (`ActionSpec::STORED_BYTES`): (step, bytes).
    pub stored: Vec<(String, u64)>,
    /// The oldest point in time the data its recovery steps brought back is from
    /// (`ActionSpec::RESTORED_AS_OF`), in Unix ms: a run that restored something.
    pub restored_as_of: Option<i64>,
    /// Whether its log verifies. One that does not is counted apart and vouches for nothing:
    /// not a last success, not a drill's numbers.
    pub verified: bool,
}

/// What the drill metrics need of a finished drill.
#[derive(Debug, Clone)]
pub struct DrillSummary {
    pub scenario: String,
    pub rto_ms: Option<u64>,
    pub rpo_ms: Option<u64>,
    pub passed: bool,
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// Label values are runbook names and statuses, which are plain; escape anyway, as the format
/// requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text. Runs not finished (running, waiting) count in `lifeboat_runs` only.
pub fn render(runs: &[RunSummary]) -> String {
    #[derive(Default)]
    struct PerRunbook {
        /// (finished, duration, status) of the newest finished run.
        last: Option<(i64, i64, String)>,
        last_success: Option<i64>,
        /// The newest successful run's duration and what its backup steps stored.
        last_success_run: Option<(i64, Vec<(String, u64)>)>,
        /// The newest successful recovery that is not a drill: (finished, RTO ms, RPO ms).
        recovery: Option<(i64, i64, i64)>,
        by_status: BTreeMap<String, u64>,
        unverified: u64,
    }
    let mut per: BTreeMap<&str, PerRunbook> = BTreeMap::new();
    // The newest finished drill of each (runbook, scenario): (finished, its numbers).
    let mut drills: BTreeMap<(&str, &str), (i64, &DrillSummary)> = BTreeMap::new();
    // The newest run's recovery points: (runbook, step, what) -> (finished, at).
    let mut points: BTreeMap<(&str, &str, &str), (i64, i64)> = BTreeMap::new();
    for r in runs {
        if !r.verified {
            per.entry(&r.runbook).or_default().unverified += 1;
            continue;
        }
        if let (Some(d), Some(end)) = (&r.drill, r.finished_at.as_deref().and_then(unix_ms)) {
            let e = drills.entry((&r.runbook, &d.scenario)).or_insert((end, d));
            if end > e.0 {
                *e = (end, d);
            }
        }
        if let Some(end) = r.finished_at.as_deref().and_then(unix_ms) {
            for (step, of, at) in &r.points {
                let e = points.entry((&r.runbook, step, of)).or_insert((end, *at));
                if end >= e.0 {
                    *e = (end, *at);
                }
            }
        }
        let p = per.entry(&r.runbook).or_default();
        *p.by_status.entry(r.status.clone()).or_default() += 1;
        let (Some(start), Some(end)) = (
            unix_ms(&r.started_at),
            r.finished_at.as_deref().and_then(unix_ms),
        ) else {
            continue;
        };
        if p.last.as_ref().is_none_or(|(t, _, _)| end > *t) {
            p.last = Some((end, (end - start).max(0), r.status.clone()));
        }
        if r.status == "succeeded" && p.last_success.is_none_or(|t| end > t) {
            p.last_success = Some(end);
            p.last_success_run = Some(((end - start).max(0), r.stored.clone()));
        }
        // A real recovery: from when it started (the incident's response) to its end, and back
        // from its start to the point in time of the data it restored. A drill measures its own.
        if let (Some(asof), None, "succeeded") = (r.restored_as_of, &r.drill, r.status.as_str())
            && p.recovery.is_none_or(|(t, _, _)| end > t)
        {
            p.recovery = Some((end, (end - start).max(0), (start - asof).max(0)));
        }
    }
    let mut out = String::new();
    let mut family = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    family(
        "lifeboat_run_duration_seconds",
        "Duration of the newest finished run of each runbook, with its status.",
        per.iter()
            .filter_map(|(rb, p)| {
                let (_, d, status) = p.last.as_ref()?;
                Some((
                    format!("runbook=\"{}\",status=\"{}\"", label(rb), label(status)),
                    seconds(*d),
                ))
            })
            .collect(),
    );
    family(
        "lifeboat_last_success_timestamp_seconds",
        "When the newest successful run of each runbook finished, in Unix time. Alert when it grows old.",
        per.iter()
            .filter_map(|(rb, p)| {
                Some((
                    format!("runbook=\"{}\"", label(rb)),
                    seconds(p.last_success?),
                ))
            })
            .collect(),
    );
    family(
        "lifeboat_last_success_duration_seconds",
        "How long the newest successful run of each runbook took: a backup that takes much longer than usual is worth a look.",
        per.iter()
            .filter_map(|(rb, p)| {
                Some((
                    format!("runbook=\"{}\"", label(rb)),
                    seconds(p.last_success_run.as_ref()?.0),
                ))
            })
            .collect(),
    );
    family(
        "lifeboat_backup_bytes",
        "Bytes each backup step of the newest successful run of each runbook stored. Alert on one much smaller than before: a backup of an emptied or half-read database still succeeds.",
        per.iter()
            .flat_map(|(rb, p)| {
                p.last_success_run
                    .iter()
                    .flat_map(|(_, stored)| stored.iter())
                    .map(move |(step, bytes)| {
                        (
                            format!("runbook=\"{}\",step=\"{}\"", label(rb), label(step)),
                            *bytes as f64,
                        )
                    })
            })
            .collect(),
    );
    family(
        "lifeboat_recovery_rto_seconds",
        "How long the newest successful recovery run of each runbook (not a drill) took, from its start to its end: the RTO the last real incident had, as far as lifeboat saw it.",
        per.iter()
            .filter_map(|(rb, p)| {
                Some((format!("runbook=\"{}\"", label(rb)), seconds(p.recovery?.1)))
            })
            .collect(),
    );
    family(
        "lifeboat_recovery_rpo_seconds",
        "How far back from its start the data the newest successful recovery run of each runbook (not a drill) restored is: the RPO the last real incident had.",
        per.iter()
            .filter_map(|(rb, p)| {
                Some((format!("runbook=\"{}\"", label(rb)), seconds(p.recovery?.2)))
            })
            .collect(),
    );
    family(
        "lifeboat_last_run_timestamp_seconds",
        "When the newest finished run of each runbook finished, whatever its status, in Unix time.",
        per.iter()
            .filter_map(|(rb, p)| {
                Some((
                    format!("runbook=\"{}\"", label(rb)),
                    seconds(p.last.as_ref()?.0),
                ))
            })
            .collect(),
    );
    let drill_rows = |f: &dyn Fn(&DrillSummary, i64) -> Option<f64>| -> Vec<(String, f64)> {
        drills
            .iter()
            .filter_map(|((rb, sc), (end, d))| {
                Some((
                    format!("runbook=\"{}\",scenario=\"{}\"", label(rb), label(sc)),
                    f(d, *end)?,
                ))
            })
            .collect()
    };
    family(
        "lifeboat_drill_rto_seconds",
        "RTO measured by the newest finished drill of each scenario: from the end of the injected fault to the steady state holding again.",
        drill_rows(&|d, _| d.rto_ms.map(|m| seconds(m as i64))),
    );
    family(
        "lifeboat_drill_rpo_seconds",
        "RPO measured by the newest finished drill of each scenario: from the incident back to the point in time of the data restored.",
        drill_rows(&|d, _| d.rpo_ms.map(|m| seconds(m as i64))),
    );
    family(
        "lifeboat_drill_passed",
        "Whether the newest finished drill of each scenario passed (1) or failed (0).",
        drill_rows(&|d, _| Some(if d.passed { 1.0 } else { 0.0 })),
    );
    family(
        "lifeboat_drill_last_timestamp_seconds",
        "When the newest finished drill of each scenario finished, in Unix time. Alert when game days stop happening.",
        drill_rows(&|_, end| Some(seconds(end))),
    );
    family(
        "lifeboat_recovery_point_timestamp_seconds",
        "How recent the data a disaster now could be recovered to is, in Unix time, as the newest run of a readiness runbook read it (of=\"wal\": the newest archived WAL; of=\"backup\": the newest backup). Alert when time() minus it exceeds the RPO.",
        points
            .iter()
            .map(|((rb, step, of), (_, at))| {
                (
                    format!(
                        "runbook=\"{}\",step=\"{}\",of=\"{}\"",
                        label(rb),
                        label(step),
                        label(of)
                    ),
                    seconds(*at),
                )
            })
            .collect(),
    );
    family(
        "lifeboat_runs_unverified",
        "Runs whose log fails verification (`lifeboat verify`): left out of every other metric. Alert on any.",
        per.iter()
            .filter(|(_, p)| p.unverified > 0)
            .map(|(rb, p)| (format!("runbook=\"{}\"", label(rb)), p.unverified as f64))
            .collect(),
    );
    family(
        "lifeboat_runs",
        "Runs recorded in the state store whose logs verify, by runbook and status.",
        per.iter()
            .flat_map(|(rb, p)| {
                p.by_status.iter().map(move |(s, n)| {
                    (
                        format!("runbook=\"{}\",status=\"{}\"", label(rb), label(s)),
                        *n as f64,
                    )
                })
            })
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rb: &str, status: &str, start: &str, end: Option<&str>) -> RunSummary {
        RunSummary {
            verified: true,
            points: Vec::new(),
            stored: Vec::new(),
            restored_as_of: None,
            runbook: rb.into(),
            status: status.into(),
            started_at: start.into(),
            finished_at: end.map(String::from),
            drill: None,
        }
    }

    fn drill(start: &str, end: &str, rto_ms: Option<u64>, passed: bool) -> RunSummary {
        RunSummary {
            verified: true,
            points: Vec::new(),
            drill: Some(DrillSummary {
                scenario: "data-corruption".into(),
                rto_ms,
                rpo_ms: Some(61_250),
                passed,
            }),
            ..run(
                "restore",
                if passed { "succeeded" } else { "failed" },
                start,
                Some(end),
            )
        }
    }

    #[test]
    fn the_newest_drill_of_each_scenario_gives_rto_rpo_and_whether_it_passed() {
        let text = render(&[
            drill(
                "2026-11-20T01:00:00Z",
                "2026-11-20T01:10:00Z",
                Some(42_500),
                true,
            ),
            drill("2026-11-21T01:00:00Z", "2026-11-21T01:10:00Z", None, false),
        ]);
        // The newer drill failed before its RTO could be measured: no stale RTO from the older.
        assert!(!text.contains("lifeboat_drill_rto_seconds{"), "{text}");
        for line in [
            "lifeboat_drill_rpo_seconds{runbook=\"restore\",scenario=\"data-corruption\"} 61.25\n",
            "lifeboat_drill_passed{runbook=\"restore\",scenario=\"data-corruption\"} 0\n",
            "lifeboat_drill_last_timestamp_seconds{runbook=\"restore\",scenario=\"data-corruption\"} 1795223400\n",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        let text = render(&[drill(
            "2026-11-20T01:00:00Z",
            "2026-11-20T01:10:00Z",
            Some(42_500),
            true,
        )]);
        assert!(text.contains("lifeboat_drill_rto_seconds{runbook=\"restore\",scenario=\"data-corruption\"} 42.5\n"), "{text}");
        assert!(
            text.contains(
                "lifeboat_drill_passed{runbook=\"restore\",scenario=\"data-corruption\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_newest_run_and_the_newest_success_per_runbook() {
        let text = render(&[
            RunSummary {
                stored: vec![("dump".into(), 7_340_032)],
                ..run(
                    "backup",
                    "succeeded",
                    "2026-11-20T01:00:00Z",
                    Some("2026-11-20T01:00:30Z"),
                )
            },
            run(
                "backup",
                "failed",
                "2026-11-21T01:00:00Z",
                Some("2026-11-21T01:00:05.5Z"),
            ),
            run("backup", "running", "2026-11-22T01:00:00Z", None),
            RunSummary {
                // Restored data from 01:45:00, 15 minutes before the run began.
                restored_as_of: Some(1_795_052_700_000),
                ..run(
                    "restore",
                    "succeeded",
                    "2026-11-19T02:00:00.886Z",
                    Some("2026-11-19T02:00:01Z"),
                )
            },
            run(
                "restore",
                "failed",
                "2026-11-21T02:00:00Z",
                Some("2026-11-21T02:01:00Z"),
            ),
            // The newest "success" of all, but its log does not verify: it vouches for nothing.
            RunSummary {
                verified: false,
                ..run(
                    "restore",
                    "succeeded",
                    "2026-11-23T02:00:00Z",
                    Some("2026-11-23T02:00:01Z"),
                )
            },
        ]);
        let expected = "\
# HELP lifeboat_run_duration_seconds Duration of the newest finished run of each runbook, with its status.
# TYPE lifeboat_run_duration_seconds gauge
lifeboat_run_duration_seconds{runbook=\"backup\",status=\"failed\"} 5.5
lifeboat_run_duration_seconds{runbook=\"restore\",status=\"failed\"} 60
# HELP lifeboat_last_success_timestamp_seconds When the newest successful run of each runbook finished, in Unix time. Alert when it grows old.
# TYPE lifeboat_last_success_timestamp_seconds gauge
lifeboat_last_success_timestamp_seconds{runbook=\"backup\"} 1795136430
lifeboat_last_success_timestamp_seconds{runbook=\"restore\"} 1795053601
# HELP lifeboat_last_success_duration_seconds How long the newest successful run of each runbook took: a backup that takes much longer than usual is worth a look.
# TYPE lifeboat_last_success_duration_seconds gauge
lifeboat_last_success_duration_seconds{runbook=\"backup\"} 30
lifeboat_last_success_duration_seconds{runbook=\"restore\"} 0.114
# HELP lifeboat_backup_bytes Bytes each backup step of the newest successful run of each runbook stored. Alert on one much smaller than before: a backup of an emptied or half-read database still succeeds.
# TYPE lifeboat_backup_bytes gauge
lifeboat_backup_bytes{runbook=\"backup\",step=\"dump\"} 7340032
# HELP lifeboat_recovery_rto_seconds How long the newest successful recovery run of each runbook (not a drill) took, from its start to its end: the RTO the last real incident had, as far as lifeboat saw it.
# TYPE lifeboat_recovery_rto_seconds gauge
lifeboat_recovery_rto_seconds{runbook=\"restore\"} 0.114
# HELP lifeboat_recovery_rpo_seconds How far back from its start the data the newest successful recovery run of each runbook (not a drill) restored is: the RPO the last real incident had.
# TYPE lifeboat_recovery_rpo_seconds gauge
lifeboat_recovery_rpo_seconds{runbook=\"restore\"} 900.886
# HELP lifeboat_last_run_timestamp_seconds When the newest finished run of each runbook finished, whatever its status, in Unix time.
# TYPE lifeboat_last_run_timestamp_seconds gauge
lifeboat_last_run_timestamp_seconds{runbook=\"backup\"} 1795222805.5
lifeboat_last_run_timestamp_seconds{runbook=\"restore\"} 1795226460
# HELP lifeboat_runs_unverified Runs whose log fails verification (`lifeboat verify`): left out of every other metric. Alert on any.
# TYPE lifeboat_runs_unverified gauge
lifeboat_runs_unverified{runbook=\"restore\"} 1
# HELP lifeboat_runs Runs recorded in the state store whose logs verify, by runbook and status.
# TYPE lifeboat_runs gauge
lifeboat_runs{runbook=\"backup\",status=\"failed\"} 1
lifeboat_runs{runbook=\"backup\",status=\"running\"} 1
lifeboat_runs{runbook=\"backup\",status=\"succeeded\"} 1
lifeboat_runs{runbook=\"restore\",status=\"failed\"} 1
lifeboat_runs{runbook=\"restore\",status=\"succeeded\"} 1
";
        assert_eq!(text, expected);
        assert_eq!(render(&[]), "");
        // Durations come from integer milliseconds: no float noise.
        let one = render(&[run(
            "r",
            "succeeded",
            "2026-11-19T02:00:00.886Z",
            Some("2026-11-19T02:00:01Z"),
        )]);
        assert!(
            one.contains(
                "lifeboat_run_duration_seconds{runbook=\"r\",status=\"succeeded\"} 0.114\n"
            ),
            "{one}"
        );
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
