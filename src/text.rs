//! Text that reaches a terminal or names someone: what counts as a control or bidirectional
//! formatting character, and a form of any text that shows them instead of obeying them.

use std::borrow::Cow;

/// Characters that change how a terminal shows text instead of being text: C0 and C1 controls,
/// and the Unicode marks, embeddings, overrides and isolates that reorder it (Trojan Source).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}'
        )
}

/// Whether a name (an operator, an approver, an identity) holds such a character, or a line
/// break: names go into logs and messages, where either would forge another line.
pub fn bad_name(s: &str) -> bool {
    s.chars().any(is_hidden)
}

/// `s` with each hidden character shown as `\u{…}` (line breaks and tabs kept when `lines`):
/// what a person should see of text that came from a runbook, a command or a server.
pub fn printable(s: &str, lines: bool) -> Cow<'_, str> {
    let keep = |c: char| lines && (c == '\n' || c == '\t');
    if !s.chars().any(|c| is_hidden(c) && !keep(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_hidden(c) && !keep(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_are_shown_not_obeyed() {
        assert_eq!(printable("plain text", false), "plain text");
        assert_eq!(printable("a\u{1b}[2Jb", false), "a\\u{1b}[2Jb");
        assert_eq!(printable("x\u{202E}gnp.exe", false), "x\\u{202e}gnp.exe");
        assert_eq!(printable("one\ntwo\r", true), "one\ntwo\\u{d}");
        assert_eq!(printable("one\ntwo", false), "one\\u{a}two");
        assert!(bad_name("ana\nrun 2 succeeded"));
        assert!(bad_name("bo\u{2066}"));
        assert!(!bad_name("ana.b-c_d"));
        assert!(!bad_name("José"));
    }
}
