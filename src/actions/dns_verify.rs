//! `dns.verify`: resolve a name until the answer is the expected one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, DescribeContext, Effect, Output, WithProblem, dns_failover::RecordType, out};
use crate::runbook::DurationText;

/// Query `server` (or the system resolver) for `name` until the answer equals `expect`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsVerify {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The records the answer must hold, in any order.
    pub expect: Vec<String>,
    /// `host:port` of the server to ask; the system resolver when absent.
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
    const OUTPUTS: &'static [Output] = &[out("answer", "the records answered"), out("ttl", "their TTL")];

    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn destructive(&self) -> bool {
        false
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p: Vec<WithProblem> = WithProblem::duration("/within", self.within.as_ref()).into_iter().collect();
        p.extend(WithProblem::duration("/interval", self.interval.as_ref()));
        if self.expect.is_empty() {
            p.push(WithProblem::new("/expect", "give the records the answer must hold"));
        }
        p
    }
    fn describe(&self, _: &dyn DescribeContext) -> String {
        let server = self.server.as_deref().map_or("the system resolver".to_string(), |s| s.to_string());
        let within = self.within.as_ref().and_then(|d| d.0.as_str()).unwrap_or("2m");
        format!("ask {server} for {} {:?} until it answers {} (up to {within})", self.name, self.record_type, self.expect.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes() {
        let d = describe::<DnsVerify>(json!({"name": "a.test.", "type": "A", "expect": ["192.0.2.7"], "server": "127.0.0.1:15353"}));
        assert_eq!(d, "ask 127.0.0.1:15353 for a.test. A until it answers 192.0.2.7 (up to 2m)");
    }
}
