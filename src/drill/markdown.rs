//! The drill report as Markdown: for the game-day ticket, the postmortem, the pull request.

use std::fmt::Write;

use super::measure::{DrillReport, Holds};
use crate::runbook::duration;

/// A measured span for people: `983ms`, `1.4s`, `12m05s`, `2h10m`. JSON keeps the milliseconds.
pub(super) fn dur(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        duration::format(std::time::Duration::from_secs(ms / 1000))
    }
}

pub(super) fn holds_text(h: Holds) -> &'static str {
    match h {
        Holds::Held => "held",
        Holds::Failed => "did not hold",
        Holds::NotChecked => "not checked",
    }
}

/// "12s (objective 30m: met)", "not measured (objective 15m)".
pub fn against(measured: Option<u64>, objective: Option<u64>) -> String {
    match (measured, objective) {
        (Some(m), Some(o)) => format!(
            "{} (objective {}: {})",
            dur(m),
            dur(o),
            if m <= o { "met" } else { "MISSED" }
        ),
        (Some(m), None) => format!("{} (no objective)", dur(m)),
        (None, Some(o)) => format!("not measured (objective {})", dur(o)),
        (None, None) => "not measured (no objective)".into(),
    }
}

/// Table cells hold error messages: keep them on one line and out of the table syntax.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

pub fn render(r: &DrillReport) -> String {
    let mut o = String::new();
    let verdict = if r.passed { "PASSED" } else { "FAILED" };
    let _ = writeln!(o, "# Drill {verdict}: {} / {}\n", r.runbook, r.scenario);
    if let Some(d) = &r.description {
        let _ = writeln!(o, "{}\n", d.trim());
    }
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(
        o,
        "| Runbook | {} {} (`{}`) |",
        r.runbook,
        r.version,
        cell(&r.file)
    );
    let _ = writeln!(o, "| Scenario | {} |", r.scenario);
    let _ = writeln!(o, "| Run | `{}`, {} |", r.run, r.status);
    let _ = writeln!(
        o,
        "| Operator | {} on {} |",
        cell(&r.operator),
        cell(&r.host)
    );
    let _ = writeln!(
        o,
        "| Started / finished | {} / {} |",
        r.started_at,
        r.finished_at.as_deref().unwrap_or("—")
    );
    let _ = writeln!(
        o,
        "| **RTO** | {} |",
        against(r.rto_ms, r.objectives.rto_ms)
    );
    let _ = writeln!(
        o,
        "| **RPO** | {} |",
        against(r.rpo_ms, r.objectives.rpo_ms)
    );
    let _ = writeln!(
        o,
        "| Incident (end of injection) | {} |",
        r.incident_at.as_deref().unwrap_or("—")
    );
    let _ = writeln!(
        o,
        "| Steady state held again | {} |",
        r.recovered_at.as_deref().unwrap_or("—")
    );
    let _ = writeln!(
        o,
        "| Data restored as of | {} |",
        r.restored_as_of
            .as_ref()
            .map(|p| format!("{} (`{}`, output `{}`)", p.at, p.step, p.output))
            .unwrap_or_else(|| "—".into())
    );
    let _ = writeln!(
        o,
        "| Steady state before / after | {} / {} |",
        holds_text(r.steady_before),
        holds_text(r.steady_after)
    );
    if !r.reasons.is_empty() {
        let _ = writeln!(o, "\n## Why it failed\n");
        for why in &r.reasons {
            let _ = writeln!(o, "- {}", why.trim());
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(o, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(o, "- {}", n.trim());
        }
    }
    let _ = writeln!(o, "\n## Timeline\n");
    let _ = writeln!(
        o,
        "Times are from the start of the run.\n\n| Step | Part | Action | Start | Took | Attempts | Result |\n|---|---|---|---|---|---|---|"
    );
    for s in &r.steps {
        let start = s.attempts.first().map(|a| dur(a.start_ms));
        let end = s.attempts.last().and_then(|a| a.end_ms);
        let took = match (s.attempts.first(), end) {
            (Some(a), Some(e)) => dur(e.saturating_sub(a.start_ms)),
            _ => "—".into(),
        };
        let _ = writeln!(
            o,
            "| `{}` | {} | {} | {} | {} | {} | {} |",
            s.id,
            s.part.map_or("", |p| p.label()),
            s.action.as_deref().unwrap_or("—"),
            start.as_deref().unwrap_or("—"),
            took,
            s.attempts.len(),
            cell(&s.result_text())
        );
    }
    let failed: Vec<_> = r.failed_attempts().collect();
    if !failed.is_empty() {
        let _ = writeln!(o, "\n## Failed attempts\n");
        for (s, a) in failed {
            let _ = writeln!(
                o,
                "- `{}` attempt {} at {}: {}",
                s.id,
                a.attempt,
                dur(a.start_ms),
                a.error.as_deref().unwrap_or("").trim()
            );
        }
    }
    let e = &r.evidence;
    let _ = writeln!(o, "\n## Evidence\n");
    let _ = writeln!(
        o,
        "- Run log: {} lines, hash chain {}; last line's SHA-256 `{}`",
        e.log_lines,
        if e.log_intact { "intact" } else { "BROKEN" },
        e.log_hash
    );
    let _ = writeln!(o, "- Runbook file SHA-256 `{}`", r.file_sha256);
    let _ = writeln!(
        o,
        "- Check it: `lifeboat verify {}` prints the same hash; `lifeboat log {}` shows every event.",
        r.run, r.run
    );
    o
}
