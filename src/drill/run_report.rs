//! The report of any run, drill or not (`lifeboat report RUN`): the incident's timeline of steps
//! and attempts, who approved what and when, the errors, the outputs, and the run log's hash, so
//! a postmortem starts from the record rather than from memory. Built from the log alone, and
//! drawn by the drill report's own pieces (its timeline, steps table and evidence).

use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use super::measure::{Folded, StepRow, fold};
use super::{Evidence, markdown};
use crate::engine::{Event, Recorded, RunStatus};
use crate::runlog::unix_ms as ms;

#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run: String,
    pub runbook: String,
    pub version: String,
    pub file: String,
    pub file_sha256: String,
    pub operator: String,
    pub host: String,
    /// `RUN/STEP` that started this run (`action: runbook`).
    pub parent: Option<String>,
    /// The drill scenario, when the run is a drill (`lifeboat drill-report` measures it).
    pub scenario: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub summary: Option<String>,
    /// From its start to its last `run_finished`, when it finished.
    pub duration_ms: Option<u64>,
    /// Each process that took the run over after the first: `resume` and `abort`.
    pub takeovers: Vec<Takeover>,
    pub approvals: Vec<Approval>,
    pub steps: Vec<StepRow>,
    /// What each step that succeeded returned, as the log holds it (secrets already masked).
    pub outputs: Vec<(String, Value)>,
    pub evidence: Evidence,
}

#[derive(Debug, Clone, Serialize)]
pub struct Takeover {
    pub at: String,
    /// `resumed` or `aborted`.
    pub how: &'static str,
    pub by: String,
    pub host: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Approval {
    pub at: String,
    pub step: String,
    /// `approved` or `declined`.
    pub answer: &'static str,
    pub by: String,
    /// `prompt`, `command`, `yes_flag`; empty for a decline.
    pub via: String,
}

/// The report of the run whose log `events` is.
pub fn run_report(events: &[Recorded], evidence: Evidence) -> Result<RunReport, String> {
    let Some(Recorded {
        ts: started_at,
        event:
            Event::RunStarted {
                run,
                runbook,
                version,
                file,
                file_sha256,
                operator,
                host,
                drill,
                parent,
                ..
            },
        ..
    }) = events.first()
    else {
        return Err("the log does not begin with run_started".into());
    };
    let t0 = ms(started_at).unwrap_or(0);
    let mut rows = Vec::new();
    let mut index = std::collections::HashMap::new();
    let Folded {
        succeeded_at,
        finished,
    } = fold(events, t0, &mut rows, &mut index, true);
    let mut takeovers = Vec::new();
    let mut approvals = Vec::new();
    for r in events {
        match &r.event {
            Event::RunResumed { operator, host, .. } => takeovers.push(Takeover {
                at: r.ts.clone(),
                how: "resumed",
                by: operator.clone(),
                host: host.clone(),
                reason: None,
            }),
            Event::RunAborted {
                by, reason, host, ..
            } => takeovers.push(Takeover {
                at: r.ts.clone(),
                how: "aborted",
                by: by.clone(),
                host: host.clone(),
                reason: reason.clone(),
            }),
            Event::ApprovalGranted { step, by, via } => approvals.push(Approval {
                at: r.ts.clone(),
                step: step.clone(),
                answer: "approved",
                by: by.clone(),
                via: serde_json::to_value(via)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
            }),
            Event::ApprovalDenied { step, by } => approvals.push(Approval {
                at: r.ts.clone(),
                step: step.clone(),
                answer: "declined",
                by: by.clone(),
                via: String::new(),
            }),
            _ => {}
        }
    }
    let outputs = rows
        .iter()
        .filter_map(|row| {
            succeeded_at
                .get(row.id.as_str())
                .map(|(_, o)| (row.id.clone(), (*o).clone()))
        })
        .collect();
    let (finished_at, status, summary) = match finished {
        Some((ts, status, summary)) => (Some(ts.to_string()), status, Some(summary.to_string())),
        None => (None, RunStatus::Running, None),
    };
    let duration_ms = finished_at
        .as_deref()
        .and_then(ms)
        .map(|end| (end - t0).max(0) as u64);
    Ok(RunReport {
        run: run.clone(),
        runbook: runbook.clone(),
        version: version.clone(),
        file: file.clone(),
        file_sha256: file_sha256.clone(),
        operator: operator.clone(),
        host: host.clone(),
        parent: parent.clone(),
        scenario: drill.as_ref().map(|d| d.scenario.clone()),
        started_at: started_at.clone(),
        finished_at,
        status: status.as_str().to_string(),
        summary,
        duration_ms,
        takeovers,
        approvals,
        steps: rows,
        outputs,
        evidence,
    })
}

/// The report in Markdown, for a ticket or a postmortem document.
pub fn render_markdown(r: &RunReport) -> String {
    use markdown::{code, dur, text};
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# Run {}: {} {}\n",
        text(&r.status),
        text(&r.runbook),
        text(&r.version)
    );
    if let Some(s) = &r.summary {
        let _ = writeln!(o, "{}\n", text(s));
    }
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| Run | {} |", code(&r.run));
    let _ = writeln!(
        o,
        "| Runbook | {} {} ({}) |",
        text(&r.runbook),
        text(&r.version),
        code(&r.file)
    );
    let _ = writeln!(
        o,
        "| Started by | {} on {} |",
        text(&r.operator),
        text(&r.host)
    );
    let _ = writeln!(
        o,
        "| Started / finished | {} / {} |",
        r.started_at,
        r.finished_at.as_deref().unwrap_or("—")
    );
    let _ = writeln!(o, "| Took | {} |", r.duration_ms.map_or("—".into(), dur));
    if let Some(p) = &r.parent {
        let _ = writeln!(o, "| Started by step | {} |", code(p));
    }
    if let Some(s) = &r.scenario {
        let _ = writeln!(
            o,
            "| Drill scenario | {} ({} measures RTO and RPO) |",
            text(s),
            code(&format!("lifeboat drill-report {}", r.run))
        );
    }
    if !r.takeovers.is_empty() {
        let _ = writeln!(o, "\n## Taken over\n");
        for t in &r.takeovers {
            let _ = writeln!(
                o,
                "- {} {} by {} on {}{}",
                t.at,
                t.how,
                text(&t.by),
                text(&t.host),
                t.reason
                    .as_deref()
                    .map(|r| format!(": {}", text(r)))
                    .unwrap_or_default()
            );
        }
    }
    if !r.approvals.is_empty() {
        let _ = writeln!(
            o,
            "\n## Approvals\n\n| When | Step | Answer | By | How |\n|---|---|---|---|---|"
        );
        for a in &r.approvals {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                a.at,
                code(&a.step),
                a.answer,
                text(&a.by),
                text(&a.via)
            );
        }
    }
    o.push_str(&markdown::timeline(&r.steps, false));
    if !r.outputs.is_empty() {
        let _ = writeln!(o, "\n## Outputs\n");
        for (step, v) in &r.outputs {
            let _ = writeln!(o, "- {}: {}", code(step), code(&shown(v)));
        }
    }
    o.push_str(&markdown::evidence(&r.evidence, &r.file_sha256, &r.run));
    o
}

/// The report as one self-contained HTML page, like the drill report.
pub fn render_html(r: &RunReport) -> String {
    use super::html::{esc, evidence_row, page_head, steps_table, timeline};
    let banner = match r.status.as_str() {
        "succeeded" => super::PASSED_RGB,
        "failed" => super::FAILED_RGB,
        _ => WAITING_RGB,
    };
    let title = format!("Run {}: {} {}", r.status, r.runbook, r.version);
    let mut o = page_head(
        &title,
        banner,
        r.summary.as_deref().unwrap_or("not finished"),
    );
    if !r.takeovers.is_empty() {
        o.push_str("<h2>Taken over</h2><ul>");
        for t in &r.takeovers {
            let _ = write!(
                o,
                "<li>{} {} by {} on {}{}</li>",
                esc(&t.at),
                t.how,
                esc(&t.by),
                esc(&t.host),
                t.reason
                    .as_deref()
                    .map(|r| format!(": {}", esc(r)))
                    .unwrap_or_default()
            );
        }
        o.push_str("</ul>\n");
    }
    if !r.approvals.is_empty() {
        o.push_str("<h2>Approvals</h2>\n<table><tr><th>When</th><th>Step</th><th>Answer</th><th>By</th><th>How</th></tr>\n");
        for a in &r.approvals {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&a.at),
                esc(&a.step),
                a.answer,
                esc(&a.by),
                esc(&a.via)
            );
        }
        o.push_str("</table>\n");
    }
    o.push_str("<h2>Timeline</h2>\n");
    o.push_str(&timeline(
        &r.steps,
        &r.started_at,
        r.finished_at.as_deref(),
        None,
    ));
    o.push_str("<p><small>Bars: attempts (green succeeded, red failed, grey unfinished), purple = compensation.</small></p>\n");
    o.push_str(&steps_table(&r.steps, false));
    if !r.outputs.is_empty() {
        o.push_str("<h2>Outputs</h2>\n<table><tr><th>Step</th><th>Outputs</th></tr>\n");
        for (step, v) in &r.outputs {
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
                esc(step),
                esc(&shown(v))
            );
        }
        o.push_str("</table>\n");
    }
    let _ = write!(
        o,
        r#"<h2>Run</h2>
<table>
<tr><th>Runbook</th><td>{rb} {ver} (<code>{file}</code>, SHA-256 <code>{fsha}</code>)</td></tr>
<tr><th>Run</th><td><code>{run}</code>{parent}</td></tr>
<tr><th>Started by</th><td>{op} on {host}</td></tr>
<tr><th>Started / finished</th><td>{start} / {end}</td></tr>
{evidence}
</table>
</main></body></html>
"#,
        rb = esc(&r.runbook),
        ver = esc(&r.version),
        file = esc(&r.file),
        fsha = esc(&r.file_sha256),
        run = esc(&r.run),
        parent = r
            .parent
            .as_deref()
            .map(|p| format!(", started by step <code>{}</code>", esc(p)))
            .unwrap_or_default(),
        op = esc(&r.operator),
        host = esc(&r.host),
        start = esc(&r.started_at),
        end = esc(r.finished_at.as_deref().unwrap_or("—")),
        evidence = evidence_row(&r.evidence, &r.run),
    );
    o
}

/// The banner of a run that is neither succeeded nor failed (waiting, interrupted, aborted).
pub const WAITING_RGB: (u8, u8, u8) = (0x8d, 0x6e, 0x00);

/// Outputs on one line, cut at 2,000 characters: a report is read, not parsed.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 2000 {
        s.chars().take(2000).collect::<String>() + "…"
    } else {
        s
    }
}
