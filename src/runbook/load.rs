//! File to [`ValidRunbook`]: read, parse, schema, semantic checks.

use std::path::Path;

use super::{Source, ValidRunbook, source, validate};
use crate::diagnostics::Diagnostic;

/// A file and what came of it. The source is kept so diagnostics can be rendered against it.
#[derive(Debug)]
pub struct Loaded {
    pub source: Source,
    pub result: Result<ValidRunbook, Vec<Diagnostic>>,
}

pub fn load_file(path: &Path) -> Loaded {
    match source::read(path) {
        Ok(src) => finish(src),
        Err((source, d)) => Loaded {
            source,
            result: Err(vec![d]),
        },
    }
}

/// For tests and benchmarks: a runbook from memory, named `name` in diagnostics.
pub fn load_str(name: &str, text: &str) -> Loaded {
    if text.len() > source::MAX_FILE_BYTES {
        return Loaded {
            source: Source::new(Path::new(name), String::new()),
            result: Err(vec![Diagnostic::new(
                crate::diagnostics::Code::InputLimit,
                crate::diagnostics::At::File,
                format!(
                    "the text is {} bytes; a runbook may be at most {} bytes",
                    text.len(),
                    source::MAX_FILE_BYTES
                ),
            )]),
        };
    }
    finish(Source::new(Path::new(name), text.to_string()))
}

fn finish(mut src: Source) -> Loaded {
    let result = match source::parse(&mut src) {
        Ok(value) => validate::validate(&value),
        Err(d) => Err(vec![d]),
    };
    Loaded {
        source: src,
        result,
    }
}
