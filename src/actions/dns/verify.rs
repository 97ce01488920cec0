//! `dns.verify`: resolve a name until the answer is the expected one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as dns, RecordType};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, DescribeContext, Exec, Output, When, WithProblem, out,
};
use crate::runbook::DurationText;

/// Query `server` (or the system resolver) for `name` until the answer equals `expect`, as a
/// client would: following CNAMEs, comparing the set of records in any order.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsVerify {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The records the answer must hold, in any order.
    pub expect: Vec<String>,
    /// `address:port` of the server to ask (an address, never a name); the first `nameserver` of
    /// /etc/resolv.conf when absent or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Give up after this long (default 2m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<DurationText>,
    /// Time between queries (default 2s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationText>,
}

impl ActionSpec for DnsVerify {
    const NAME: &'static str = "dns.verify";
    const SUMMARY: &'static str = "Resolve a name until the answer matches";
    const OUTPUTS: &'static [Output] = &[
        out("answer", "the records answered"),
        out("ttl", "their TTL (null when there are none)"),
        out("server", "the server asked"),
        out("queries", "how many queries it took"),
    ];
    const READ_ONLY: When<Self> = When::Always;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn check(&self) -> Vec<WithProblem> {
        let mut p: Vec<WithProblem> = WithProblem::duration("/within", self.within.as_ref())
            .into_iter()
            .collect();
        p.extend(WithProblem::duration("/interval", self.interval.as_ref()));
        if self.expect.is_empty() {
            p.push(WithProblem::new(
                "/expect",
                "give the records the answer must hold",
            ));
        }
        for (i, e) in self.expect.iter().enumerate() {
            if !crate::actions::is_template(e)
                && let Err(m) = dns::canonical(self.record_type, e)
            {
                p.push(WithProblem::new(format!("/expect/{i}"), m));
            }
        }
        if let Some(s) = &self.server
            && !crate::actions::is_template(s)
            && !s.trim().is_empty()
            && let Err(e) = dns::server_addr(s)
        {
            p.push(WithProblem::new("/server", e.message));
        }
        p
    }
    fn describe(&self, _: &dyn DescribeContext) -> String {
        let server = self
            .server
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map_or("the system resolver".to_string(), |s| s.to_string());
        let within = self
            .within
            .as_ref()
            .and_then(|d| d.0.as_str())
            .unwrap_or("2m");
        format!(
            "ask {server} for {} {:?} until it answers {} (up to {within})",
            self.name,
            self.record_type,
            self.expect.join(", ")
        )
    }
    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(self.run(cx))
    }
}

impl DnsVerify {
    async fn run(&self, cx: &Exec<'_>) -> Result<serde_json::Value, ActionError> {
        let t = self.record_type;
        let (server, recursion) = match self.server.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(s) => (dns::server_addr(s)?, false),
            None => (dns::system_resolver()?, true),
        };
        let expect = dns::canonical_all(t, &self.expect)?;
        let within = crate::actions::support::duration_or(
            self.within.as_ref(),
            std::time::Duration::from_secs(120),
        )?;
        let interval = crate::actions::support::duration_or(
            self.interval.as_ref(),
            std::time::Duration::from_secs(2),
        )?;
        let deadline = tokio::time::Instant::now() + within;
        let mut queries = 0u32;
        let mut last = String::new();
        loop {
            queries += 1;
            let seen = match dns::query(server, &self.name, t, recursion).await {
                Ok(set) if set.values == expect => {
                    return Ok(serde_json::json!({
                        "answer": set.values,
                        "ttl": set.ttl,
                        "server": server.to_string(),
                        "queries": queries,
                    }));
                }
                Ok(set) if set.values.is_empty() => "no records".to_string(),
                Ok(set) => format!("[{}]", set.values.join(", ")),
                // No answer or SERVFAIL: a resolver restarting, or a zone reloading; ask again.
                Err(e) if e.transient => e.message,
                Err(e) => return Err(e),
            };
            if seen != last {
                (cx.progress)(&format!("{server} answers {seen}"));
                last = seen;
            }
            if tokio::time::Instant::now() + interval > deadline {
                return Err(ActionError::permanent(format!(
                    "after {} and {queries} queries, {server} still answers {last} for {} {t:?}, not [{}]",
                    crate::runbook::duration::format(within),
                    dns::fqdn(&self.name),
                    expect.join(", ")
                )));
            }
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes() {
        let d = describe::<DnsVerify>(
            json!({"name": "a.test.", "type": "A", "expect": ["192.0.2.7"], "server": "127.0.0.1:15353"}),
        );
        assert_eq!(
            d,
            "ask 127.0.0.1:15353 for a.test. A until it answers 192.0.2.7 (up to 2m)"
        );
        let v = parse::<DnsVerify>(
            json!({"name": "a.test.", "type": "AAAA", "expect": ["192.0.2.7"], "server": "ns.example.com"}),
        );
        let fields: Vec<_> = v.check().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["/expect/0", "/server"]);
    }
}
