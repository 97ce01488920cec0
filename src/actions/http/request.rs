//! `http.request`: call an HTTP endpoint and check its status.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{read_body, send, status_error};
use crate::actions::{ActionFuture, ActionSpec, DescribeContext, Exec, Output, When, out};

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
    const READ_ONLY: When<Self> = When::If {
        what: "with GET or HEAD",
        test: |a| matches!(a.method, Method::Get | Method::Head),
    };
    const DESTRUCTIVE: When<Self> = When::If {
        what: "with DELETE",
        test: |a| a.method == Method::Delete,
    };
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let method = reqwest::Method::from_bytes(method_name(self.method).as_bytes())
                .expect("a known method");
            let mut req = cx.http.request(method, &self.url);
            let mut has_key = false;
            for (k, v) in &self.headers {
                has_key |= k.eq_ignore_ascii_case("idempotency-key");
                req = req.header(k, v);
            }
            // The attempt key lets a server that supports it drop a repeated request.
            if !has_key && !matches!(self.method, Method::Get | Method::Head) {
                req = req.header("Idempotency-Key", cx.attempt_key);
            }
            if let Some(body) = &self.body {
                req = match body {
                    serde_json::Value::String(s) => req.body(s.clone()),
                    other => req
                        .header("content-type", "application/json")
                        .body(other.to_string()),
                };
            }
            let resp = send(req, &self.url).await?;
            let status = resp.status().as_u16();
            let headers: serde_json::Map<String, serde_json::Value> = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned().into(),
                    )
                })
                .collect();
            let body = read_body(resp).await?;
            let ok = if self.expect_status.is_empty() {
                (200..300).contains(&status)
            } else {
                self.expect_status.contains(&status)
            };
            if !ok {
                return Err(status_error(status, &self.url, &body));
            }
            let json =
                serde_json::from_str::<serde_json::Value>(&body).unwrap_or(serde_json::Value::Null);
            Ok(
                serde_json::json!({"status": status, "headers": headers, "body": body, "json": json}),
            )
        })
    }

    fn describe(&self, _: &dyn DescribeContext) -> String {
        let method = method_name(self.method);
        let expect = if self.expect_status.is_empty() {
            "2xx".to_string()
        } else {
            self.expect_status
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        };
        format!("{method} {} and expect {expect}", self.url)
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_method_and_expectation() {
        assert_eq!(
            describe::<HttpRequest>(json!({"url": "http://x/health"})),
            "GET http://x/health and expect 2xx"
        );
        let d = describe::<HttpRequest>(
            json!({"url": "http://x", "method": "POST", "expect_status": [201, 202]}),
        );
        assert_eq!(d, "POST http://x and expect 201 or 202");
    }

    #[test]
    fn methods_are_checked() {
        assert!(
            reject::<HttpRequest>(json!({"url": "u", "method": "FETCH"})).starts_with("/method")
        );
        assert!(parse::<HttpRequest>(json!({"url": "u", "method": "DELETE"})).destructive());
    }
}
