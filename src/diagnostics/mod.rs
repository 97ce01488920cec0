//! Problems found in a runbook, each tied to the YAML node at fault.
//!
//! Checks never format output: they produce [`Diagnostic`]s that point at a node by JSON pointer.
//! Only [`render`] turns a pointer into `file:line:col` and a caret snippet, using the span map built
//! when the file was loaded. That keeps every check independent of YAML positions.

mod codes;
mod render;

pub use codes::Code;
pub use render::{Rendered, render, render_json};

/// Where in the document a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// A node, by JSON pointer into the document (`/steps/3/needs/0`). `key` points at the mapping key
    /// that holds the node rather than at its value (for "unknown field" and the like).
    Node { pointer: String, key: bool },
    /// A piece of text inside a scalar node (a name inside a template); falls back to the whole node
    /// when the text cannot be found in the node's source.
    Text { pointer: String, needle: String },
    /// A position found by the YAML parser, as a 1-based line and column.
    LineCol { line: usize, col: usize },
    /// The file as a whole (it is empty, binary or unreadable).
    File,
}

impl At {
    pub fn node(pointer: impl Into<String>) -> At {
        At::Node {
            pointer: pointer.into(),
            key: false,
        }
    }
    pub fn key(pointer: impl Into<String>) -> At {
        At::Node {
            pointer: pointer.into(),
            key: true,
        }
    }
    pub fn text(pointer: impl Into<String>, needle: impl Into<String>) -> At {
        At::Text {
            pointer: pointer.into(),
            needle: needle.into(),
        }
    }
}

/// One problem. `message` is the headline; `label` is the short text under the caret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    pub at: At,
    pub label: Option<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, at: At, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            message: message.into(),
            at,
            label: None,
            help: None,
        }
    }
    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
    pub fn help_opt(mut self, help: Option<String>) -> Diagnostic {
        self.help = help;
        self
    }
}

/// Escapes one JSON-pointer segment (RFC 6901).
pub fn escape_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Joins a pointer and a segment.
pub fn ptr(base: &str, segment: impl std::fmt::Display) -> String {
    format!("{base}/{}", escape_segment(&segment.to_string()))
}

/// "did you mean `x`?" for the closest candidate, when one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    got: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        let score = strsim::jaro_winkler(got, c);
        if score > 0.8 && best.is_none_or(|(b, _)| score > b) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}
