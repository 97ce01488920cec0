//! Turning a [`Diagnostic`] into `file:line:col: error[CODE]: message` and a caret snippet.

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};

use super::{At, Diagnostic};
use crate::runbook::Source;

/// A diagnostic placed in its file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rendered {
    pub file: String,
    pub line: usize,
    pub column: usize,
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
            code: d.code.as_str(),
            message: d.message.clone(),
            label: d.label.clone(),
            help: d.help.clone(),
            offset,
            len,
        }
    }

    /// The header line: `file:line:col: error[CODE]: message`.
    pub fn header(&self) -> String {
        format!(
            "{}:{}:{}: error[{}]: {}",
            self.file, self.line, self.column, self.code, self.message
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{code}")]
struct Snippet {
    code: &'static str,
    src: NamedSource<String>,
    span: LabeledSpan,
    help: Option<String>,
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
    let has_text = !src.text.is_empty() && !matches!(d.at, At::File);
    let snippet = Snippet {
        code: r.code,
        src: NamedSource::new(&src.name, src.text.clone()).with_language("yaml"),
        span: LabeledSpan::new(r.label.clone(), r.offset, r.len),
        help: r.help.clone(),
    };
    if has_text {
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
            for l in lines.by_ref() {
                out.push_str(l);
                out.push('\n');
            }
            return out;
        }
    }
    if let Some(h) = &r.help {
        out.push_str(&format!("  help: {h}\n"));
    }
    out
}

/// Every diagnostic as one JSON object per line, for editors and CI annotations.
pub fn render_json(src: &Source, d: &Diagnostic) -> String {
    serde_json::to_string(&Rendered::new(src, d)).expect("diagnostics serialize")
}
