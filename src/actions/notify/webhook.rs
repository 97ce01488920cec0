//! `notify.webhook`: post a message to a Slack-compatible webhook.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::actions::{ActionFuture, ActionSpec, DescribeContext, Exec, Output, When, out};

/// Post `{"text": ...}` (Slack-compatible JSON) to a webhook URL.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyWebhook {
    /// Webhook URL; usually `{{ secrets.NAME }}`, since the URL is the credential.
    pub url: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

impl ActionSpec for NotifyWebhook {
    const NAME: &'static str = "notify.webhook";
    const SUMMARY: &'static str = "Post a message to a Slack-compatible webhook";
    const OUTPUTS: &'static [Output] = &[out("status", "the webhook's HTTP status")];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let mut payload = serde_json::json!({"text": self.text});
            if let Some(c) = &self.channel {
                payload["channel"] = c.clone().into();
            }
            if let Some(u) = &self.username {
                payload["username"] = u.clone().into();
            }
            let req = cx
                .http
                .post(&self.url)
                .header("content-type", "application/json")
                .header("Idempotency-Key", cx.attempt_key)
                .body(payload.to_string());
            let resp = crate::actions::http::send(req, &self.url).await?;
            let status = resp.status().as_u16();
            let body = crate::actions::http::read_body(resp).await?;
            if !(200..300).contains(&status) {
                return Err(crate::actions::http::status_error(status, &self.url, &body));
            }
            Ok(serde_json::json!({"status": status}))
        })
    }

    fn describe(&self, _: &dyn DescribeContext) -> String {
        let to = self
            .channel
            .as_deref()
            .map(|c| format!(" to {c}"))
            .unwrap_or_default();
        format!("post{to}: {}", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_without_the_url() {
        let d = describe::<NotifyWebhook>(
            json!({"url": "https://hooks/T0/B0/XXX", "text": "restore done", "channel": "#ops"}),
        );
        assert_eq!(d, "post to #ops: restore done");
        assert!(!d.contains("hooks"), "the URL is a credential");
    }
}
