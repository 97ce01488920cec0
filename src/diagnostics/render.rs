//! Turning a [`Diagnostic`] into `file:line:col: error[CODE]: message` and a caret snippet.

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteSpanContents, SourceCode};

use super::{At, Diagnostic};
use crate::runbook::Source;
use crate::text::printable;

/// A diagnostic placed in its file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rendered {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub severity: &'static str,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(skip)]
    offset: usize,
    #[serde(skip)]
    len: usize,
}

/// Byte range the diagnostic points at, kept to one line so the snippet stays short.
fn locate(src: &Source, at: &At) -> (usize, usize) {
    let (start, end) = match at {
        At::File => return (0, 0),
        At::LineCol { line, col } => {
            let o = src.offset(*line, *col);
            let len = src.text[o..].chars().next().map_or(0, char::len_utf8);
            return (o, len);
        }
        At::Node { pointer, key } => match src.spans().and_then(|m| m.lookup(pointer)) {
            Some(s) => {
                let r = if *key {
                    s.key.unwrap_or(s.value)
                } else {
                    s.value
                };
                (r.start, r.end)
            }
            None => (0, 0),
        },
        At::Text { pointer, needle } => match src.spans().and_then(|m| m.lookup(pointer)) {
            Some(s) => {
                let r = s.value;
                let hay = src.text.get(r.start..r.end).unwrap_or("");
                match hay.find(needle.as_str()) {
                    Some(i) => (r.start + i, r.start + i + needle.len()),
                    None => (r.start, r.end),
                }
            }
            None => (0, 0),
        },
    };
    let start = start.min(src.text.len());
    let end = end.clamp(start, src.text.len());
    let line_end = src.text[start..end].find('\n').map_or(end, |i| start + i);
    // Trailing blanks of a block node are not part of what is wrong.
    let trimmed = src.text[start..line_end].trim_end().len();
    (start, trimmed)
}

impl Rendered {
    pub fn new(src: &Source, d: &Diagnostic) -> Rendered {
        let (offset, len) = locate(src, &d.at);
        let (line, column) = src.line_col(offset);
        Rendered {
            file: src.name.clone(),
            line,
            column,
            severity: d.code.severity(),
            code: d.code.as_str(),
            message: d.message.clone(),
            label: d.label.clone(),
            help: d.help.clone(),
            offset,
            len,
        }
    }

    /// The header line: `file:line:col: error[CODE]: message` (or `warning[CODE]`), values in
    /// it shown, not obeyed.
    pub fn header(&self) -> String {
        let text = format!(
            "{}:{}:{}: {}[{}]: {}",
            self.file, self.line, self.column, self.severity, self.code, self.message
        );
        printable(&text, false).into_owned()
    }
}

/// How much of a line, each side of what a diagnostic points at, its snippet shows.
const WINDOW: usize = 200;

/// The lines a snippet shows (the diagnostic's, and one each side), each clipped to WINDOW
/// bytes around the diagnostic's column and made printable, with where the span falls in it.
/// miette then works on a few hundred bytes, not the whole file: a 2 MB line renders as fast
/// as a short one, and a file with thousands of problems in linear time.
struct Excerpt {
    name: String,
    text: String,
    /// The 0-based line number of the excerpt's first line in the file.
    first_line: usize,
    span: (usize, usize),
}

impl Excerpt {
    fn around(src: &Source, offset: usize, len: usize) -> Excerpt {
        let text = &src.text;
        let starts = &src.line_starts;
        let at = starts.partition_point(|&s| s <= offset).max(1) - 1;
        let line = |i: usize| {
            let start = starts[i];
            let end = starts.get(i + 1).map_or(text.len(), |&e| e - 1);
            &text[start..end.max(start)]
        };
        let col = offset - starts[at];
        let floor = |s: &str, mut i: usize| {
            i = i.min(s.len());
            while !s.is_char_boundary(i) {
                i -= 1;
            }
            i
        };
        let ceil = |s: &str, mut i: usize| {
            i = i.min(s.len());
            while !s.is_char_boundary(i) {
                i += 1;
            }
            i
        };
        let mut out = String::new();
        let mut span = (0, 0);
        let first = at.saturating_sub(1);
        for i in first..=(at + 1).min(starts.len() - 1) {
            let l = line(i);
            // The diagnostic's line around its column; the others from their start.
            let (lo, hi) = if i == at {
                (
                    floor(l, col.saturating_sub(WINDOW)),
                    ceil(l, col + len + WINDOW),
                )
            } else {
                (0, ceil(l, 2 * WINDOW))
            };
            if i > first {
                out.push('\n');
            }
            if lo > 0 {
                out.push('…');
            }
            if i == at {
                let s_end = ceil(l, col + len).min(hi).max(lo);
                let s_start = floor(l, col).clamp(lo, s_end);
                out.push_str(&printable(&l[lo..s_start], false));
                let begin = out.len();
                out.push_str(&printable(&l[s_start..s_end], false));
                span = (begin, out.len() - begin);
                out.push_str(&printable(&l[s_end..hi], false));
            } else {
                out.push_str(&printable(&l[lo..hi], false));
            }
            if hi < l.len() {
                out.push('…');
            }
        }
        Excerpt {
            name: printable(&src.name, false).into_owned(),
            text: out,
            first_line: first,
            span,
        }
    }
}

impl SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        before: usize,
        after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let inner = self.text.read_span(span, before, after)?;
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            inner.data(),
            *inner.span(),
            inner.line() + self.first_line,
            inner.column(),
            inner.line_count(),
        )))
    }
}

#[derive(thiserror::Error)]
#[error("{code}")]
struct Snippet {
    code: &'static str,
    src: Excerpt,
    span: LabeledSpan,
    help: Option<String>,
}

impl std::fmt::Debug for Snippet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code)
    }
}

impl miette::Diagnostic for Snippet {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(self.span.clone())))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn std::fmt::Display>)
    }
}

/// The header, then miette's caret snippet of the source, then help.
pub fn render(src: &Source, d: &Diagnostic, color: bool) -> String {
    let r = Rendered::new(src, d);
    let mut out = r.header();
    out.push('\n');
    let help = r.help.as_deref().map(|h| printable(h, true).into_owned());
    let has_text = !src.text.is_empty() && !matches!(d.at, At::File);
    if has_text {
        let excerpt = Excerpt::around(src, r.offset, r.len);
        let (start, len) = excerpt.span;
        let snippet = Snippet {
            code: r.code,
            span: LabeledSpan::new(
                r.label.as_deref().map(|l| printable(l, false).into_owned()),
                start,
                len,
            ),
            src: excerpt,
            help: help.clone(),
        };
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(110)
            .with_links(false)
            .with_context_lines(1);
        let mut body = String::new();
        if handler.render_report(&mut body, &snippet).is_ok() {
            // miette's own header repeats what ours says; keep the snippet and help only.
            let mut lines = body
                .lines()
                .skip_while(|l| !l.trim_start().starts_with('╭'));
            // miette places the span in the excerpt; the file's own line and column are ours.
            if let Some(top) = lines.next() {
                let at = top.find("╭─[").map_or(0, |i| i + "╭─[".len());
                out.push_str(&top[..at]);
                out.push_str(&format!(
                    "{}:{}:{}]\n",
                    printable(&r.file, false),
                    r.line,
                    r.column
                ));
            }
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
            return out;
        }
    }
    if let Some(h) = &help {
        out.push_str(&format!("  help: {h}\n"));
    }
    out
}

/// Every diagnostic as one JSON object per line, for editors and CI annotations.
pub fn render_json(src: &Source, d: &Diagnostic) -> String {
    serde_json::to_string(&Rendered::new(src, d)).expect("diagnostics serialize")
}
