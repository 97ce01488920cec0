//! `http.request`: call an HTTP endpoint and check its status.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, DescribeContext, Effect, Output, out};

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

/// Send one HTTP request. 5xx answers and connection errors are retried; other statuses outside
/// `expect_status` fail the step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    pub url: String,
    #[serde(default)]
    pub method: Method,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub headers: IndexMap<String, String>,
    /// Request body: a string is sent as is; anything else as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Statuses that count as success; any 2xx when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<u16>,
}

impl ActionSpec for HttpRequest {
    const NAME: &'static str = "http.request";
    const SUMMARY: &'static str = "Send an HTTP request and check the status";
    const OUTPUTS: &'static [Output] = &[
        out("status", "the response status code"),
        out("headers", "response headers, lowercase names"),
        out("body", "the response body as text"),
        out("json", "the body parsed as JSON, when it is JSON"),
    ];

    fn effect(&self) -> Effect {
        match self.method {
            Method::Get | Method::Head => Effect::ReadOnly,
            _ => Effect::Changes,
        }
    }
    fn destructive(&self) -> bool {
        self.method == Method::Delete
    }
    fn describe(&self, _: &dyn DescribeContext) -> String {
        let method = serde_json::to_value(self.method).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let expect = if self.expect_status.is_empty() {
            "2xx".to_string()
        } else {
            self.expect_status.iter().map(u16::to_string).collect::<Vec<_>>().join(" or ")
        };
        format!("{method} {} and expect {expect}", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_method_and_expectation() {
        assert_eq!(describe::<HttpRequest>(json!({"url": "http://x/health"})), "GET http://x/health and expect 2xx");
        let d = describe::<HttpRequest>(json!({"url": "http://x", "method": "POST", "expect_status": [201, 202]}));
        assert_eq!(d, "POST http://x and expect 201 or 202");
    }

    #[test]
    fn methods_are_checked() {
        assert!(reject::<HttpRequest>(json!({"url": "u", "method": "FETCH"})).starts_with("/method"));
        assert!(parse::<HttpRequest>(json!({"url": "u", "method": "DELETE"})).destructive());
    }
}
