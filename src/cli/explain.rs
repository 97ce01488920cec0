//! `lifeboat explain CODE`: the error code's docs page, built into the binary.

use crate::diagnostics::Code;
use crate::error::{Error, Result};
use crate::exit::Exit;

pub(super) fn run(code: &str) -> Result<Exit> {
    let wanted = code.trim().to_ascii_uppercase();
    let c = Code::ALL
        .iter()
        .find(|c| c.as_str() == wanted)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "unknown error code `{code}`; codes look like LB0103"
            ))
        })?;
    out!("{}", c.docs());
    Ok(Exit::Success)
}
