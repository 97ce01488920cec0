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

/// A value from the runbook or the run (a description, a host, an error message) as Markdown
/// text that reads as itself wherever the report puts it: in a paragraph, after a list marker,
/// in a table cell. The characters that make syntax anywhere in a line are backslash-escaped
/// (so no link, image, HTML, entity, emphasis, code, math or table column can come of it), and
/// those that make it only at the start of a line (a heading, a quote, a list) are escaped
/// there; line breaks become spaces and control characters are shown escaped. Bare URLs may
/// still be made links by a renderer that links them: they are shown, never fetched. A property
/// test checks all this with a CommonMark parser with every extension on.
pub fn text(s: &str) -> String {
    // `^` and `~` for renderers with superscript and subscript, `$` for math, `=` for marks.
    const ANYWHERE: &str = "\\`*_[]<|~&$^=";
    const AT_START: &str = "-+#>:";
    let flat = s.replace(['\n', '\r'], " ");
    let shown = crate::text::printable(flat.trim(), false);
    let mut out = String::with_capacity(shown.len() + 8);
    let digits = shown.bytes().take_while(u8::is_ascii_digit).count();
    for (i, c) in shown.char_indices() {
        let at_start = i == 0 && AT_START.contains(c);
        let list_marker = i == digits && digits > 0 && (c == '.' || c == ')');
        if ANYWHERE.contains(c) || at_start || list_marker {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A name as inline code, when it can be one (no backtick, no line break); as text otherwise.
pub(super) fn code(s: &str) -> String {
    if s.is_empty() || s.contains(['`', '\n', '\r']) || s != crate::text::printable(s, false) {
        text(s)
    } else {
        format!("`{s}`")
    }
}

pub fn render(r: &DrillReport) -> String {
    let mut o = String::new();
    let verdict = if r.passed { "PASSED" } else { "FAILED" };
    let _ = writeln!(
        o,
        "# Drill {verdict}: {} / {}\n",
        text(&r.runbook),
        text(&r.scenario)
    );
    if let Some(d) = &r.description {
        let _ = writeln!(o, "{}\n", text(d));
    }
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(
        o,
        "| Runbook | {} {} ({}) |",
        text(&r.runbook),
        text(&r.version),
        code(&r.file)
    );
    let _ = writeln!(o, "| Scenario | {} |", text(&r.scenario));
    let _ = writeln!(o, "| Run | {}, {} |", code(&r.run), text(&r.status));
    let _ = writeln!(
        o,
        "| Operator | {} on {} |",
        text(&r.operator),
        text(&r.host)
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
            .map(|p| format!(
                "{} ({}, output {})",
                text(&p.at),
                code(&p.step),
                code(&p.output)
            ))
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
            let _ = writeln!(o, "- {}", text(why));
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(o, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(o, "- {}", text(n));
        }
    }
    o.push_str(&timeline(&r.steps, true));
    o.push_str(&evidence(&r.evidence, &r.file_sha256, &r.run));
    o
}

/// The timeline as a table, a row per step (with its drill part when `parts`), and the failed
/// attempts after it.
pub(super) fn timeline(steps: &[super::StepRow], parts: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "\n## Timeline\n");
    let _ = writeln!(
        o,
        "Times are from the start of the run.\n\n| Step |{} Action | Start | Took | Attempts | Result |\n|---|{}---|---|---|---|---|",
        if parts { " Part |" } else { "" },
        if parts { "---|" } else { "" }
    );
    for s in steps {
        let start = s.attempts.first().map(|a| dur(a.start_ms));
        let end = s.attempts.last().and_then(|a| a.end_ms);
        let took = match (s.attempts.first(), end) {
            (Some(a), Some(e)) => dur(e.saturating_sub(a.start_ms)),
            _ => "—".into(),
        };
        let _ = writeln!(
            o,
            "| {} |{} {} | {} | {} | {} | {} |",
            code(&s.id),
            if parts {
                format!(" {} |", s.part.map_or("", |p| p.label()))
            } else {
                String::new()
            },
            s.action.as_deref().map_or("—".into(), code),
            start.as_deref().unwrap_or("—"),
            took,
            s.attempts.len(),
            text(&s.result_text())
        );
    }
    let failed: Vec<_> = super::measure::failed_attempts(steps).collect();
    if !failed.is_empty() {
        let _ = writeln!(o, "\n## Failed attempts\n");
        for (s, a) in failed {
            let _ = writeln!(
                o,
                "- {} attempt {} at {}: {}",
                code(&s.id),
                a.attempt,
                dur(a.start_ms),
                text(a.error.as_deref().unwrap_or(""))
            );
        }
    }
    o
}

/// What ties the report to the run log, and how to check it.
pub(super) fn evidence(e: &super::Evidence, file_sha256: &str, run: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "\n## Evidence\n");
    let _ = writeln!(
        o,
        "- Run log: {} lines, hash chain {}; last line's SHA-256 {}",
        e.log_lines,
        if e.log_intact { "intact" } else { "BROKEN" },
        code(&e.log_hash)
    );
    let _ = writeln!(o, "- Runbook file SHA-256 {}", code(file_sha256));
    let _ = writeln!(
        o,
        "- Check it: {} prints the same hash; {} shows every event.",
        code(&format!("lifeboat verify {}", run)),
        code(&format!("lifeboat log {}", run))
    );
    o
}

#[cfg(test)]
mod tests {
    use super::text;
    use proptest::prelude::*;
    use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

    /// What a value must read as: itself, on one line, with hidden characters shown.
    fn expected(s: &str) -> String {
        crate::text::printable(s.replace(['\n', '\r'], " ").trim(), false).into_owned()
    }

    /// Parses `doc` with every extension a renderer might have (bar smart punctuation, which
    /// rewrites text by design) and returns its text, or the first event that is not text or
    /// the frame the report puts values in.
    fn read(doc: &str) -> Result<String, String> {
        let options = Options::all() - Options::ENABLE_SMART_PUNCTUATION;
        let mut out = String::new();
        for event in Parser::new_ext(doc, options) {
            match event {
                Event::Text(t) => out.push_str(&t),
                Event::Start(
                    Tag::Paragraph
                    | Tag::List(None)
                    | Tag::Item
                    | Tag::Table(_)
                    | Tag::TableHead
                    | Tag::TableRow
                    | Tag::TableCell,
                )
                | Event::End(
                    TagEnd::Paragraph
                    | TagEnd::List(false)
                    | TagEnd::Item
                    | TagEnd::Table
                    | TagEnd::TableHead
                    | TagEnd::TableRow
                    | TagEnd::TableCell,
                ) => {}
                other => return Err(format!("{other:?}")),
            }
        }
        Ok(out)
    }

    /// Characters Markdown gives meaning to, dense, with digits, spaces, line breaks and any
    /// other character now and then.
    fn hostile() -> impl Strategy<Value = String> {
        let syntax: Vec<char> = "\\`*_{}[]()<>#+-=!|~&$^:.;\"'@/%0123456789 \t\n\rx"
            .chars()
            .collect();
        prop::collection::vec(
            prop_oneof![8 => prop::sample::select(syntax), 1 => any::<char>()],
            0..48,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn a_value_reads_as_itself_in_a_paragraph_a_list_and_a_table(s in hostile()) {
            let want = expected(&s);
            let v = text(&s);
            prop_assert_eq!(read(&v), Ok(want.clone()), "paragraph: {:?}", v);
            if !want.is_empty() {
                prop_assert_eq!(read(&format!("- {v}")), Ok(want.clone()), "list: {:?}", v);
                let table = format!("| h |\n|---|\n| {v} |\n");
                prop_assert_eq!(read(&table), Ok(format!("h{want}")), "table: {:?}", v);
            }
        }
    }

    #[test]
    fn known_attacks_are_text() {
        for attack in [
            "![x](http://tracker.example/p.png)",
            "[click](javascript:alert(1))",
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "&lt;b&gt; &#x3C;",
            "# Drill PASSED",
            "1. step\n2. step",
            "| col | col |",
            "```\ncode\n```",
            "$\\LaTeX$",
            "<https://example.com>",
            "[^1]: footnote",
            "- [x] done",
            "---",
            "    indented",
        ] {
            assert_eq!(read(&text(attack)), Ok(expected(attack)), "{attack}");
        }
    }
}
