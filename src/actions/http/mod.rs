//! `http.*`, and what every action that speaks HTTP shares (`notify.webhook` too): sending with
//! credentials kept out of error messages, bounded bodies, and which statuses are worth a retry.

pub mod request;

use crate::actions::ActionError;

/// Bodies beyond this are cut: outputs go into the run log.
pub const MAX_BODY: usize = 1024 * 1024;

/// Sends a request; no answer at all (refused, reset, timed out) is worth another attempt.
pub async fn send(
    req: reqwest::RequestBuilder,
    url: &str,
) -> Result<reqwest::Response, ActionError> {
    req.send().await.map_err(|e| {
        let shown = crate::runbook::redact_url(url);
        // reqwest's messages repeat the URL, which may carry a credential.
        let why = crate::actions::support::error_chain(&e).replace(url, &shown);
        ActionError::transient(format!("no answer from {shown}: {why}"))
    })
}

pub async fn read_body(resp: reqwest::Response) -> Result<String, ActionError> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ActionError::transient(format!("reading the answer: {e}")))?;
    let cut = &bytes[..bytes.len().min(MAX_BODY)];
    Ok(String::from_utf8_lossy(cut).into_owned())
}

/// 5xx, 429 and 408 say "not now"; any other unexpected status says "no".
pub fn status_error(status: u16, url: &str, body: &str) -> ActionError {
    let snippet: String = body.chars().take(300).collect();
    let msg = format!(
        "{} answered {status}{}{}",
        crate::runbook::redact_url(url),
        if snippet.is_empty() { "" } else { ": " },
        snippet.trim()
    );
    if status >= 500 || status == 429 || status == 408 {
        ActionError::transient(msg)
    } else {
        ActionError::permanent(msg)
    }
}
