//! Reading a runbook file into a JSON value plus the span map, with hard limits so that hostile input
//! (huge files, alias bombs, deep nesting, binary junk) ends in a clear error, never a hang or a panic.

use std::path::{Path, PathBuf};

use crate::diagnostics::{At, Code, Diagnostic};

use super::spans::{self, SpanMap};

/// The largest runbook file accepted. Generated 10,000-step runbooks are about 2 MB; anything near
/// this limit is not a procedure a person reviews.
pub const MAX_FILE_BYTES: usize = 8 * 1024 * 1024;
/// Nesting deeper than this is never a runbook (the deepest real one is under 15 levels).
pub const MAX_DEPTH: usize = 64;
/// Cap on nodes after alias expansion: stops "billion laughs" long before memory is at risk.
pub const MAX_NODES: usize = 1_000_000;

/// A file's text and where each of its nodes is.
#[derive(Debug)]
pub struct Source {
    pub path: PathBuf,
    /// The name used in diagnostics: the path as the user gave it.
    pub name: String,
    pub text: String,
    pub line_starts: Vec<usize>,
    /// Built on first use: only diagnostics need it, and most files have none.
    spans: std::sync::OnceLock<SpanMap>,
    /// Set once the text has parsed as YAML; before that there are no nodes to map.
    parsed: bool,
}

impl Source {
    pub fn new(path: &Path, text: String) -> Source {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            path: path.to_path_buf(),
            name: path.display().to_string(),
            text,
            line_starts,
            spans: std::sync::OnceLock::new(),
            parsed: false,
        }
    }

    pub fn spans(&self) -> Option<&SpanMap> {
        self.parsed.then(|| {
            self.spans
                .get_or_init(|| spans::build(&self.text, &self.line_starts))
        })
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, col + 1)
    }

    /// Byte offset of a 1-based line and column (in characters).
    pub fn offset(&self, line: usize, col: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        self.text[start..]
            .char_indices()
            .nth(col.saturating_sub(1))
            .map_or(self.text.len(), |(i, _)| start + i)
    }
}

/// Reads a file. Errors come back as a diagnostic with the source (possibly empty) for rendering.
pub fn read(path: &Path) -> Result<Source, (Source, Diagnostic)> {
    let empty = || Source::new(path, String::new());
    let bytes = match read_capped(path) {
        Ok(b) => b,
        Err(ReadError::TooLarge(n)) => {
            return Err((
                empty(),
                Diagnostic::new(
                    Code::InputLimit,
                    At::File,
                    format!(
                        "the file is {} bytes; a runbook may be at most {} bytes",
                        n, MAX_FILE_BYTES
                    ),
                )
                .help("split the procedure into several runbooks"),
            ));
        }
        Err(ReadError::Io(e)) => {
            return Err((
                empty(),
                Diagnostic::new(
                    Code::ReadFailed,
                    At::File,
                    format!("cannot read the file: {e}"),
                ),
            ));
        }
    };
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Source::new(path, text)),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            // Show the valid prefix so the caret lands where the junk starts.
            let text = String::from_utf8_lossy(&bytes[..valid]).into_owned();
            let src = Source::new(path, text);
            let (line, col) = src.line_col(valid);
            Err((
                src,
                Diagnostic::new(
                    Code::NotText,
                    At::LineCol { line, col },
                    format!("the file is not UTF-8 text (invalid byte at offset {valid})"),
                )
                .label("text ends here"),
            ))
        }
    }
}

enum ReadError {
    TooLarge(u64),
    Io(std::io::Error),
}

fn read_capped(path: &Path) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX_FILE_BYTES as u64 {
        return Err(ReadError::TooLarge(len));
    }
    // The length can change under us (a pipe, a growing file): never read past the cap.
    let mut buf = Vec::with_capacity(len as usize);
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(ReadError::Io)?;
    if buf.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(buf.len() as u64));
    }
    Ok(buf)
}

/// Parses the YAML text into a JSON value; node spans become available in `src`.
pub fn parse(src: &mut Source) -> Result<serde_json::Value, Diagnostic> {
    if src.text.trim().is_empty() || only_comments(&src.text) {
        return Err(
            Diagnostic::new(Code::NotOneDocument, At::File, "the file is empty")
                .help("a runbook starts with `apiVersion: lifeboat/v1` and `kind: Runbook`"),
        );
    }
    let options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
        // Comments are never read; capturing them costs a tenth of the parse.
        emit_comments: false,
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_documents: 1,
        },
    };
    let value: serde_json::Value =
        serde_saphyr::from_str_with_options(&src.text, options).map_err(|e| yaml_error(&e))?;
    if let Some(d) = unsupported(&src.text).into_iter().next() {
        return Err(d);
    }
    if value.is_null() {
        return Err(Diagnostic::new(
            Code::NotOneDocument,
            At::File,
            "the document is empty",
        ));
    }
    src.parsed = true;
    Ok(value)
}

/// What parses as YAML but would not reach lifeboat as written: a tag (`!!binary` is decoded,
/// an unknown `!tag` dropped, silently), and characters that reorder how the text is shown
/// (bidirectional overrides and isolates: a reviewer would read something other than what
/// runs). Numbers JSON cannot hold (`.inf`, `1e999`) serde-saphyr refuses itself (`classify`).
fn unsupported(text: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let at = |line: usize, col: usize| At::LineCol { line, col };
    for (n, line) in text.lines().enumerate() {
        if let Some((col, c)) = line
            .chars()
            .enumerate()
            .find(|(_, c)| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
        {
            out.push(
                Diagnostic::new(
                    Code::HiddenText,
                    at(n + 1, col + 1),
                    format!(
                        "a bidirectional control character (U+{:04X}) changes how this line is shown",
                        c as u32
                    ),
                )
                .help("remove it: what a reviewer reads must be what runs (write right-to-left text without override or isolate characters)"),
            );
        }
    }
    // The event walk below costs another parse: only a text with a `!` can hold a tag.
    if !text.contains('!') {
        return out;
    }
    use serde_saphyr::granit_parser::{Event, Parser};
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        match event {
            Event::DocumentEnd => break,
            Event::Scalar(_, _, _, Some(_))
            | Event::MappingStart(_, _, Some(_))
            | Event::SequenceStart(_, _, Some(_)) => out.push(
                Diagnostic::new(
                    Code::UnsupportedYaml,
                    at(span.start.line().max(1), span.start.col() + 1),
                    "YAML tags are not read by lifeboat",
                )
                .help("remove the tag: `!!binary` would be decoded and an unknown `!tag` dropped without a word; write the value as plain text"),
            ),
            _ => {}
        }
    }
    out
}

fn only_comments(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

fn yaml_error(e: &serde_saphyr::Error) -> Diagnostic {
    let at = match e.location() {
        Some(l) if l.line() > 0 => At::LineCol {
            line: l.line() as usize,
            col: l.column().max(1) as usize,
        },
        _ => At::File,
    };
    let mut plain = e.to_string();
    // serde-saphyr appends positions to its messages; ours go in front, so drop them.
    if let Some(i) = plain.find(" at line ") {
        plain.truncate(i);
    }
    let (code, message, help) = classify(&plain);
    Diagnostic::new(code, at, message).help_opt(help)
}

fn classify(msg: &str) -> (Code, String, Option<String>) {
    if let Some(rest) = msg.strip_prefix("non-finite float ") {
        let v = rest.split('`').nth(1).unwrap_or(rest);
        return (
            Code::UnsupportedYaml,
            format!("`{v}` is not a number lifeboat can hold (it has no infinity or NaN)"),
            Some(format!(
                "quote it (\"{v}\") if it is text; otherwise use a finite number"
            )),
        );
    }
    if msg.starts_with("multiple YAML documents") || msg.contains("Documents {") {
        return (
            Code::NotOneDocument,
            "a second YAML document starts here; a runbook file holds exactly one".into(),
            Some("put each runbook in its own file, or remove the `---` line".into()),
        );
    }
    if msg.contains("recursion limit") || msg.contains("Depth {") {
        return (
            Code::InputLimit,
            format!("the document nests deeper than {MAX_DEPTH} levels"),
            None,
        );
    }
    if msg.contains("Nodes {")
        || msg.contains("alias") && msg.contains("limit")
        || msg.contains("Alias")
    {
        return (
            Code::InputLimit,
            format!("aliases expand the document past {MAX_NODES} nodes"),
            Some(
                "anchors and aliases may share values, not multiply them (\"billion laughs\")"
                    .into(),
            ),
        );
    }
    if msg.starts_with("budget breached") {
        return (
            Code::InputLimit,
            format!("the document exceeds a parser limit ({msg})"),
            None,
        );
    }
    if let Some(key) = msg.strip_prefix("duplicate mapping key: ") {
        let key = key.split(',').next().unwrap_or(key);
        return (
            Code::YamlSyntax,
            format!("duplicate key `{key}`"),
            Some("each key may appear once in a mapping".into()),
        );
    }
    (Code::YamlSyntax, msg.to_string(), None)
}
