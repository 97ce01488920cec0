//! `lifeboat explain CODE`: the error code's docs page, built into the binary.

use crate::diagnostics::Code;
use crate::exit::Exit;

pub(super) fn run(code: &str) -> Exit {
    let wanted = code.trim().to_ascii_uppercase();
    match Code::ALL.iter().find(|c| c.as_str() == wanted) {
        Some(c) => {
            print!("{}", c.docs());
            Exit::Success
        }
        None => {
            eprintln!("error: unknown error code `{code}`; codes look like LB0103");
            Exit::Invalid
        }
    }
}
