//! Everything the CLI writes goes through these macros. None panics: a reader that went away
//! (a pager quit, `| head`, a dropped SSH session) makes the rest of the output go nowhere, and
//! the command (a run above all) goes on. What a person reads shows control and bidirectional
//! characters instead of obeying them (`crate::text::printable`); data (JSON, a schema, a plan
//! for tools) is written exactly.

/// Data on stdout, exactly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Data on stdout, exactly, without a line break.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Words for a person on stdout (`runs`, `show`, `log`).
macro_rules! sayln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stdout().lock(), "{}", crate::text::printable(&text, true));
    }};
}

/// Words for a person on stdout, without a line break (a whole plan).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = write!(std::io::stdout().lock(), "{}", crate::text::printable(&text, true));
    }};
}

/// Words for a person on stderr: errors, notes, summaries.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        let _ = writeln!(std::io::stderr().lock(), "{}", crate::text::printable(&text, true));
    }};
}

/// Text on stderr made safe by whoever made it (a diagnostic's snippet, with its colors).
macro_rules! err_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr().lock(), $($arg)*);
    }};
}
