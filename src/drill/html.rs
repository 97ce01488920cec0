//! The drill report as one self-contained HTML page: inline CSS and an inline SVG timeline, no
//! script, no external asset, so it opens the same from a ticket attachment in ten years.

use std::fmt::Write;

use super::Part;
use super::markdown::{against, dur, holds_text};
use super::measure::{Attempt, DrillReport, Outcome, StepRow};
use crate::runlog::unix_ms;

/// The banner's colours; the screenshot test looks for them.
pub const PASSED_RGB: (u8, u8, u8) = (0x1b, 0x5e, 0x20);
pub const FAILED_RGB: (u8, u8, u8) = (0xb7, 0x1c, 0x1c);

pub(super) fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

pub(super) fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn bar_color(o: Outcome) -> &'static str {
    match o {
        Outcome::Succeeded => "#2e7d32",
        Outcome::Failed => "#c62828",
        Outcome::Skipped | Outcome::Pending => "#bdbdbd",
        Outcome::Unfinished => "#757575",
    }
}

fn band_color(p: Option<Part>) -> &'static str {
    match p {
        Some(Part::SteadyBefore) | Some(Part::SteadyAfter) => "#e8f5e9",
        Some(Part::Inject) => "#ffebee",
        Some(Part::Recovery) => "#e3f2fd",
        None => "#ffffff",
    }
}

pub fn render(r: &DrillReport) -> String {
    let banner = if r.passed { PASSED_RGB } else { FAILED_RGB };
    let verdict = if r.passed { "PASSED" } else { "FAILED" };
    let title = format!("Drill {verdict}: {} / {}", r.runbook, r.scenario);
    let mut o = page_head(&title, banner, r.description.as_deref().unwrap_or(""));
    let class = |m: Option<u64>, obj: Option<u64>| match (m, obj) {
        (Some(m), Some(o)) if m <= o => "met",
        (_, Some(_)) => "missed",
        _ => "",
    };
    let _ = write!(
        o,
        r#"<div class="cards">
<div class="card"><div class="k">RTO</div><div class="v {rc}">{rto}</div></div>
<div class="card"><div class="k">RPO</div><div class="v {pc}">{rpo}</div></div>
<div class="card"><div class="k">Steady state before / after</div><div class="v">{sb} / {sa}</div></div>
</div>
"#,
        rc = class(r.rto_ms, r.objectives.rto_ms),
        pc = class(r.rpo_ms, r.objectives.rpo_ms),
        rto = esc(&against(r.rto_ms, r.objectives.rto_ms)),
        rpo = esc(&against(r.rpo_ms, r.objectives.rpo_ms)),
        sb = holds_text(r.steady_before),
        sa = holds_text(r.steady_after),
    );
    if !r.reasons.is_empty() {
        o.push_str("<h2>Why it failed</h2><ul class=\"why\">");
        for w in &r.reasons {
            let _ = write!(o, "<li>{}</li>", esc(w.trim()));
        }
        o.push_str("</ul>\n");
    }
    if !r.notes.is_empty() {
        o.push_str("<h2>Notes</h2><ul>");
        for n in &r.notes {
            let _ = write!(o, "<li>{}</li>", esc(n.trim()));
        }
        o.push_str("</ul>\n");
    }
    o.push_str("<h2>Timeline</h2>\n");
    o.push_str(&gantt(r));
    o.push_str(&steps_table(&r.steps, true));
    let _ = write!(
        o,
        r#"<h2>Run</h2>
<table>
<tr><th>Runbook</th><td>{rb} {ver} (<code>{file}</code>, SHA-256 <code>{fsha}</code>)</td></tr>
<tr><th>Run</th><td><code>{run}</code>, {status}{summary}</td></tr>
<tr><th>Operator</th><td>{op} on {host}</td></tr>
<tr><th>Started / finished</th><td>{start} / {end}</td></tr>
<tr><th>Incident (end of injection)</th><td>{inc}</td></tr>
<tr><th>Steady state held again</th><td>{rec}</td></tr>
<tr><th>Data restored as of</th><td>{asof}</td></tr>
{evidence}
</table>
</main></body></html>
"#,
        rb = esc(&r.runbook),
        ver = esc(&r.version),
        file = esc(&r.file),
        fsha = esc(&r.file_sha256),
        run = esc(&r.run),
        status = esc(&r.status),
        summary = r
            .summary
            .as_deref()
            .map(|s| format!(": {}", esc(s)))
            .unwrap_or_default(),
        op = esc(&r.operator),
        host = esc(&r.host),
        start = esc(&r.started_at),
        end = esc(r.finished_at.as_deref().unwrap_or("—")),
        inc = esc(r.incident_at.as_deref().unwrap_or("—")),
        rec = esc(r.recovered_at.as_deref().unwrap_or("—")),
        asof = r
            .restored_as_of
            .as_ref()
            .map(|p| format!(
                "{} (<code>{}</code>, output <code>{}</code>)",
                esc(&p.at),
                esc(&p.step),
                esc(&p.output)
            ))
            .unwrap_or_else(|| "—".into()),
        evidence = evidence_row(&r.evidence, &r.run),
    );
    o
}

/// The page's head and banner, shared by the drill report and the run report: one style sheet
/// inline, no script, so a page opens the same from a ticket attachment years later.
pub(super) fn page_head(title: &str, banner: (u8, u8, u8), subtitle: &str) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{t}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #212121; }}
header {{ background: {bg}; color: #fff; padding: 18px 28px; }}
header h1 {{ margin: 0; font-size: 22px; }}
header p {{ margin: 4px 0 0; opacity: .9; }}
main {{ padding: 8px 28px 28px; max-width: 1200px; }}
.cards {{ display: flex; gap: 16px; flex-wrap: wrap; margin: 16px 0; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 10px 16px; min-width: 220px; }}
.card .k {{ font-size: 12px; text-transform: uppercase; color: #616161; }}
.card .v {{ font-size: 24px; font-weight: 600; }}
.met {{ color: #2e7d32; }} .missed {{ color: #c62828; }}
table {{ border-collapse: collapse; margin: 8px 0 16px; }}
th, td {{ border-bottom: 1px solid #e0e0e0; padding: 4px 10px; text-align: left; vertical-align: top; }}
th {{ background: #fafafa; }}
code {{ font: 12px ui-monospace, monospace; background: #f5f5f5; padding: 1px 4px; border-radius: 3px; word-break: break-all; }}
.why li {{ color: #b71c1c; }}
svg text {{ font: 12px system-ui, sans-serif; }}
</style></head><body>
<header><h1>{t}</h1><p>{sub}</p></header>
<main>
"#,
        t = esc(title),
        bg = hex(banner),
        sub = esc(subtitle.trim()),
    );
    o
}

/// The row that ties a report to its run log, and how to check it (the HTML twin of
/// `markdown::evidence`).
pub(super) fn evidence_row(e: &super::Evidence, run: &str) -> String {
    format!(
        "<tr><th>Run log</th><td>{} lines, hash chain {}; last line's SHA-256 <code>{}</code><br>\n<code>lifeboat verify {}</code> prints the same hash.</td></tr>",
        e.log_lines,
        if e.log_intact { "intact" } else { "BROKEN" },
        esc(&e.log_hash),
        esc(run)
    )
}

/// A Gantt chart: a row per step on a band coloured by its part, a bar per attempt, the incident
/// and the recovery as vertical lines, and RTO as the span between them.
fn gantt(r: &DrillReport) -> String {
    let mut o = timeline(
        &r.steps,
        &r.started_at,
        r.finished_at.as_deref(),
        Some((
            r.incident_at.as_deref(),
            r.recovered_at.as_deref(),
            r.rto_ms,
        )),
    );
    o.push_str("<p><small>Bands: green = steady-state checks, red = fault injection, blue = recovery. Bars: attempts (green succeeded, red failed, grey unfinished), purple = compensation. Dashed lines: the incident (red) and the steady state holding again (green).</small></p>\n");
    o
}

/// The SVG timeline of a run: a row per step (on a band coloured by its drill part), a bar per
/// attempt and compensation; with `marks` (a drill's incident, recovery and RTO), dashed lines
/// at the first two and the RTO as the span between them.
pub(super) fn timeline(
    steps: &[StepRow],
    started_at: &str,
    finished_at: Option<&str>,
    marks: Option<(Option<&str>, Option<&str>, Option<u64>)>,
) -> String {
    const LABEL: f64 = 230.0;
    const WIDTH: f64 = 720.0;
    const ROW: f64 = 22.0;
    const TOP: f64 = 28.0;
    let t0 = unix_ms(started_at);
    let at = |ts: Option<&str>| {
        ts.and_then(unix_ms)
            .zip(t0)
            .map(|(t, s)| (t - s).max(0) as u64)
    };
    let (incident, recovered, rto_ms) = match marks {
        Some((i, r, rto)) => (at(i), at(r), rto),
        None => (None, None, None),
    };
    let end_of = |a: &Attempt| a.end_ms.unwrap_or(a.start_ms);
    let total = steps
        .iter()
        .flat_map(|s| s.attempts.iter().chain(s.compensation.iter()).map(end_of))
        .chain(at(finished_at))
        .max()
        .unwrap_or(0)
        .max(1);
    let x = |m: u64| LABEL + WIDTH * (m as f64 / total as f64);
    let rows = steps.len() as f64;
    let height = TOP + ROW * rows + 34.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" viewBox="0 0 {w} {height}" role="img" aria-label="timeline of the run">"#,
        w = LABEL + WIDTH + 50.0
    );
    // Axis: five ticks.
    for i in 0..=5 {
        let m = total * i / 5;
        let _ = writeln!(
            o,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{b:.1}" stroke="#eeeeee"/><text x="{px:.1}" y="18" text-anchor="middle" fill="#616161">{t}</text>"##,
            px = x(m),
            b = TOP + ROW * rows,
            t = esc(&dur(m)),
        );
    }
    for (i, s) in steps.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let _ = writeln!(
            o,
            r#"<rect x="0" y="{y:.1}" width="{w:.1}" height="{ROW}" fill="{band}"/><text x="6" y="{ty:.1}">{id}</text>"#,
            w = LABEL + WIDTH,
            band = band_color(s.part),
            ty = y + 15.0,
            id = esc(&s.id),
        );
        for a in s.attempts.iter() {
            let x1 = x(a.start_ms);
            let x2 = x(end_of(a)).max(x1 + 2.0);
            let _ = writeln!(
                o,
                r#"<rect x="{x1:.1}" y="{by:.1}" width="{bw:.1}" height="14" rx="2" fill="{c}"><title>{id} attempt {n}: {what}</title></rect>"#,
                by = y + 4.0,
                bw = x2 - x1,
                c = bar_color(a.outcome),
                id = esc(&s.id),
                n = a.attempt,
                what = esc(&match &a.error {
                    Some(e) => format!(
                        "{} after {}: {e}",
                        a.outcome.as_str(),
                        dur(end_of(a) - a.start_ms)
                    ),
                    None => format!("{} in {}", a.outcome.as_str(), dur(end_of(a) - a.start_ms)),
                }),
            );
        }
        if let Some(c) = &s.compensation {
            let x1 = x(c.start_ms);
            let x2 = x(end_of(c)).max(x1 + 2.0);
            let _ = writeln!(
                o,
                r##"<rect x="{x1:.1}" y="{by:.1}" width="{bw:.1}" height="6" fill="#6a1b9a"><title>compensation of {id}: {what}</title></rect>"##,
                by = y + 8.0,
                bw = x2 - x1,
                id = esc(&s.id),
                what = c.outcome.as_str(),
            );
        }
        if s.outcome == Outcome::Skipped {
            let _ = writeln!(
                o,
                r##"<text x="{LABEL}" y="{ty:.1}" dx="4" fill="#9e9e9e">skipped</text>"##,
                ty = y + 15.0
            );
        }
    }
    let bottom = TOP + ROW * rows;
    if let Some(i) = incident {
        let _ = writeln!(
            o,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{bottom:.1}" stroke="#c62828" stroke-width="2" stroke-dasharray="5,3"/>"##,
            px = x(i)
        );
    }
    if let Some(rc) = recovered {
        let _ = writeln!(
            o,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{bottom:.1}" stroke="#2e7d32" stroke-width="2" stroke-dasharray="5,3"/>"##,
            px = x(rc)
        );
    }
    if let (Some(i), Some(rc)) = (incident, recovered) {
        let (x1, x2) = (x(i), x(rc));
        let _ = writeln!(
            o,
            r##"<line x1="{x1:.1}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="#212121" stroke-width="2"/><text x="{mid:.1}" y="{ty:.1}" text-anchor="middle">RTO {t}</text>"##,
            y = bottom + 10.0,
            mid = (x1 + x2) / 2.0,
            ty = bottom + 26.0,
            t = esc(&rto_ms.map(dur).unwrap_or_default()),
        );
    }
    o.push_str("</svg>\n");
    o
}

/// A table of the steps (with their drill part when `parts`), and the failed attempts after it.
pub(super) fn steps_table(steps: &[StepRow], parts: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<h2>Steps</h2>\n<table><tr><th>Step</th>{}<th>Action</th><th>Attempts</th><th>Result</th></tr>",
        if parts { "<th>Part</th>" } else { "" }
    );
    for s in steps {
        let _ = writeln!(
            o,
            "<tr><td><code>{}</code></td>{}<td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.id),
            if parts {
                format!("<td>{}</td>", s.part.map_or("", |p| p.label()))
            } else {
                String::new()
            },
            esc(s.action.as_deref().unwrap_or("—")),
            s.attempts.len(),
            esc(&s.result_text())
        );
    }
    o.push_str("</table>\n");
    let failed: Vec<_> = super::measure::failed_attempts(steps).collect();
    if !failed.is_empty() {
        o.push_str("<h2>Failed attempts</h2><ul>");
        for (s, a) in failed {
            let _ = write!(
                o,
                "<li><code>{}</code> attempt {} at {}: {}</li>",
                esc(&s.id),
                a.attempt,
                dur(a.start_ms),
                esc(a.error.as_deref().unwrap_or("").trim())
            );
        }
        o.push_str("</ul>\n");
    }
    o
}
