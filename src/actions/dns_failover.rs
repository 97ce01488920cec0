//! `dns.failover`: point a record set at the DR target.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, ConnectionUse, DescribeContext, Effect, Output, Tpl, WithProblem, out, shared::connection};
use crate::runbook::ConnectionKind;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum RecordType {
    A,
    #[allow(clippy::upper_case_acronyms)]
    AAAA,
    #[allow(clippy::upper_case_acronyms)]
    CNAME,
}

/// Replace the record set `name`/`type` with `targets`. The previous records are outputs, so a
/// `compensate` can fail back.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsFailover {
    /// An `rfc2136` or `route53` connection.
    pub connection: String,
    /// Fully qualified record name, e.g. `orders.example.com.`
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: RecordType,
    /// The new records: addresses for A/AAAA, one name for CNAME. May be one template, as in a
    /// compensation that restores `{{ outputs.previous }}`.
    pub targets: Tpl<Vec<String>>,
    /// TTL in seconds (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Tpl<u32>>,
}

impl ActionSpec for DnsFailover {
    const NAME: &'static str = "dns.failover";
    const SUMMARY: &'static str = "Replace a DNS record set with the DR target (RFC 2136 or Route 53)";
    const OUTPUTS: &'static [Output] = &[
        out("previous", "the records before the change"),
        out("previous_ttl", "their TTL"),
        out("records", "the records now served"),
    ];

    fn effect(&self) -> Effect {
        Effect::Changes
    }
    fn destructive(&self) -> bool {
        true
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        vec![connection("/connection", &self.connection, &[ConnectionKind::Rfc2136, ConnectionKind::Route53])]
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p = Vec::new();
        let Tpl::Value(targets) = &self.targets else { return p };
        if targets.is_empty() {
            p.push(WithProblem::new("/targets", "give at least one target"));
        }
        if self.record_type == RecordType::CNAME && targets.len() > 1 {
            p.push(WithProblem::new("/targets", "a CNAME has exactly one target"));
        }
        for (i, t) in targets.iter().enumerate() {
            if super::is_template(t) {
                continue;
            }
            let ok = match self.record_type {
                RecordType::A => t.parse::<std::net::Ipv4Addr>().is_ok(),
                RecordType::AAAA => t.parse::<std::net::Ipv6Addr>().is_ok(),
                RecordType::CNAME => !t.is_empty() && t.parse::<std::net::IpAddr>().is_err(),
            };
            if !ok {
                p.push(WithProblem::new(format!("/targets/{i}"), format!("`{t}` is not a valid {:?} target", self.record_type)));
            }
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let targets = match &self.targets {
            Tpl::Value(t) => t.join(", "),
            Tpl::Template(t) => t.clone(),
        };
        let ttl = self.ttl.as_ref().map_or("60".to_string(), |t| t.to_string());
        format!(
            "on {}: replace {} {:?} with {} (TTL {ttl}s); the current records are read when the step runs",
            cx.connection(&self.connection),
            self.name,
            self.record_type,
            targets
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn checks_targets_by_type() {
        let f = parse::<DnsFailover>(json!({"connection": "dns", "name": "a.test.", "type": "A", "targets": ["10.0.0.300"]}));
        assert_eq!(f.check()[0].field, "/targets/0");
        let f = parse::<DnsFailover>(json!({"connection": "dns", "name": "a.test.", "type": "A", "targets": ["192.0.2.7"], "ttl": 30}));
        assert!(f.check().is_empty());
        assert_eq!(f.describe(&Cx), "on <dns>: replace a.test. A with 192.0.2.7 (TTL 30s); the current records are read when the step runs");
        assert!(reject::<DnsFailover>(json!({"connection": "d", "name": "n", "type": "MX", "targets": []})).starts_with("/type"));
    }
}
