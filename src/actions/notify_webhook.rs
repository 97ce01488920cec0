//! `notify.webhook`: post a message to a Slack-compatible webhook.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, DescribeContext, Effect, Output, out};

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

    fn effect(&self) -> Effect {
        Effect::Changes
    }
    fn destructive(&self) -> bool {
        false
    }
    fn describe(&self, _: &dyn DescribeContext) -> String {
        let to = self.channel.as_deref().map(|c| format!(" to {c}")).unwrap_or_default();
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
        let d = describe::<NotifyWebhook>(json!({"url": "https://hooks/T0/B0/XXX", "text": "restore done", "channel": "#ops"}));
        assert_eq!(d, "post to #ops: restore done");
        assert!(!d.contains("hooks"), "the URL is a credential");
    }
}
