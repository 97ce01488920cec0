//! `dns.failover`: point a record set at the DR target.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as dns, Provider, RecordSet, RecordType};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, Tpl, When,
    WithProblem, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Replace the record set `name`/`type` with `targets`, in one atomic change, and read it back.
/// The previous records are outputs, so a `compensate` can fail back; they are noted in the run
/// log before the change, so an attempt after a crash still knows them.
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
    /// compensation that restores `{{ outputs.previous }}`; a template that renders to an empty
    /// list deletes the record set (failing back to a name that had no records).
    pub targets: Tpl<Vec<String>>,
    /// TTL in seconds (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Tpl<u32>>,
}

impl ActionSpec for DnsFailover {
    const NAME: &'static str = "dns.failover";
    const SUMMARY: &'static str =
        "Replace a DNS record set with the DR target (RFC 2136 or Route 53)";
    const OUTPUTS: &'static [Output] = &[
        out("previous", "the records before the change"),
        out("previous_ttl", "their TTL"),
        out(
            "records",
            "the records now served, read back from the server",
        ),
        out("ttl", "their TTL"),
        out("changed", "false when the records were already the targets"),
        out("server", "the server or hosted zone changed"),
        out(
            "change_id",
            "Route 53: the change's id (empty for RFC 2136)",
        ),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;
    const PREVIEWS: bool = true;

    /// Replacing a set with the same targets is a no-op, and the records it replaced are
    /// recalled from the run log rather than read again.
    fn idempotent(&self) -> bool {
        true
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(
            &self.connection,
            &[ConnectionKind::Rfc2136, ConnectionKind::Route53],
        )
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.check_rendered();
        if matches!(&self.targets, Tpl::Value(t) if t.is_empty()) {
            // Deleting a record set is what a fail-back to a name that had none does, from
            // `{{ outputs.previous }}`; written out, an empty list is a mistake.
            p.insert(0, WithProblem::new("/targets", "give at least one target"));
        }
        p
    }
    fn check_rendered(&self) -> Vec<WithProblem> {
        let mut p = Vec::new();
        let Tpl::Value(targets) = &self.targets else {
            return p;
        };
        if self.record_type == RecordType::CNAME && targets.len() > 1 {
            p.push(WithProblem::new(
                "/targets",
                "a CNAME has exactly one target",
            ));
        }
        for (i, t) in targets.iter().enumerate() {
            if crate::actions::is_template(t) {
                continue;
            }
            let ok = match self.record_type {
                RecordType::A => t.parse::<std::net::Ipv4Addr>().is_ok(),
                RecordType::AAAA => t.parse::<std::net::Ipv6Addr>().is_ok(),
                RecordType::CNAME => !t.is_empty() && t.parse::<std::net::IpAddr>().is_err(),
            };
            if !ok {
                p.push(WithProblem::new(
                    format!("/targets/{i}"),
                    format!("`{t}` is not a valid {:?} target", self.record_type),
                ));
            }
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let targets = match &self.targets {
            Tpl::Value(t) => t.join(", "),
            Tpl::Template(t) => t.clone(),
        };
        let ttl = self
            .ttl
            .as_ref()
            .map_or("60".to_string(), |t| t.to_string());
        format!(
            "on {}: replace {} {:?} with {} (TTL {ttl}s); the records it replaces are read when the step runs (`plan --live` reads them now)",
            cx.connection(&self.connection),
            self.name,
            self.record_type,
            targets
        )
    }
    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(self.run(cx))
    }
    fn preview<'a>(&'a self, cx: &'a Exec<'a>) -> Option<crate::actions::PreviewFuture<'a>> {
        Some(Box::pin(self.look(cx)))
    }
}

impl DnsFailover {
    /// The targets in canonical text and the TTL, as rendered for this attempt.
    fn wanted(&self) -> Result<(Vec<String>, u32), ActionError> {
        let targets = self
            .targets
            .value()
            .ok_or_else(|| ActionError::permanent("`targets` did not render to a list"))?;
        let ttl = match &self.ttl {
            None => 60,
            Some(t) => *t
                .value()
                .ok_or_else(|| ActionError::permanent("`ttl` did not render to a number"))?,
        };
        let values = dns::canonical_all(self.record_type, targets)?;
        if self.record_type == RecordType::CNAME && values.len() > 1 {
            return Err(ActionError::permanent("a CNAME has exactly one target"));
        }
        Ok((values, ttl))
    }

    /// The records now and after, read with the step's own connection (and key, so a wrong
    /// TSIG secret shows here).
    async fn look(&self, cx: &Exec<'_>) -> Result<String, ActionError> {
        let t = self.record_type;
        let (after, ttl) = self.wanted()?;
        let p = Provider::from_exec(cx, &self.connection).await?;
        let name = dns::fqdn(&self.name);
        let now = p.read(&name, t).await?;
        let shown = |s: &RecordSet| match s.ttl {
            Some(ttl) if !s.values.is_empty() => format!("[{}] TTL {ttl}", s.values.join(", ")),
            _ => "no records".to_string(),
        };
        let after = RecordSet {
            ttl: Some(ttl),
            values: after,
        };
        Ok(if serves(&now, &after.values, ttl) {
            format!(
                "{name} {t:?} on {} is already {}: no change",
                p.label(),
                shown(&now)
            )
        } else {
            format!(
                "{name} {t:?} on {}: now {}, after {}",
                p.label(),
                shown(&now),
                shown(&after)
            )
        })
    }

    async fn run(&self, cx: &Exec<'_>) -> Result<serde_json::Value, ActionError> {
        let t = self.record_type;
        let (wanted, ttl) = self.wanted()?;
        let p = Provider::from_exec(cx, &self.connection).await?;
        let name = dns::fqdn(&self.name);
        let current = p.read(&name, t).await?;
        // An earlier attempt may have made the change already: the records it replaced are the
        // ones in the run log, not the ones served now.
        let previous = match (cx.recall)("previous") {
            Some(v) => recalled(&v),
            None => {
                (cx.note)("previous", json_set(&current)).await?;
                current.clone()
            }
        };
        let changed = !serves(&current, &wanted, ttl);
        let mut change_id = String::new();
        if changed {
            (cx.progress)(&format!(
                "{name} {t:?}: [{}] -> [{}]",
                current.values.join(", "),
                wanted.join(", ")
            ));
            match &p {
                Provider::Rfc2136(r) => r.replace(&name, t, ttl, &wanted).await?,
                Provider::Route53(r) => {
                    change_id = r.replace(&name, t, ttl, &wanted, &current, cx).await?;
                }
            }
        }
        let now = p.read(&name, t).await?;
        if now.values != wanted {
            return Err(ActionError::permanent(format!(
                "{} accepted the change, but serves [{}] for {name} {t:?}, not [{}]",
                p.label(),
                now.values.join(", "),
                wanted.join(", ")
            )));
        }
        Ok(serde_json::json!({
            "previous": previous.values,
            // A name that had no records fails back with the new TTL (its records are deleted).
            "previous_ttl": previous.ttl.unwrap_or(ttl),
            "records": now.values,
            "ttl": now.ttl.unwrap_or(ttl),
            "changed": changed,
            "server": p.label(),
            "change_id": change_id,
        }))
    }
}

/// Whether `current` is already `values` with `ttl` (an empty set has no TTL to match).
fn serves(current: &RecordSet, values: &[String], ttl: u32) -> bool {
    current.values == values && (values.is_empty() || current.ttl == Some(ttl))
}

fn json_set(s: &RecordSet) -> serde_json::Value {
    serde_json::json!({"values": s.values, "ttl": s.ttl})
}

fn recalled(v: &serde_json::Value) -> RecordSet {
    RecordSet {
        values: v["values"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        ttl: v["ttl"].as_u64().map(|t| t as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn checks_targets_by_type() {
        let f = parse::<DnsFailover>(
            json!({"connection": "dns", "name": "a.test.", "type": "A", "targets": ["10.0.0.300"]}),
        );
        assert_eq!(f.check()[0].field, "/targets/0");
        assert_eq!(f.check_rendered()[0].field, "/targets/0");
        // Written out, an empty list is a mistake; rendered (a fail-back to no records), it
        // deletes the record set.
        let none = parse::<DnsFailover>(
            json!({"connection": "dns", "name": "a.test.", "type": "A", "targets": []}),
        );
        assert_eq!(none.check()[0].message, "give at least one target");
        assert!(none.check_rendered().is_empty());
        let f = parse::<DnsFailover>(
            json!({"connection": "dns", "name": "a.test.", "type": "A", "targets": ["192.0.2.7"], "ttl": 30}),
        );
        assert!(f.check().is_empty());
        assert_eq!(
            f.describe(&Cx),
            "on <dns>: replace a.test. A with 192.0.2.7 (TTL 30s); the records it replaces are read when the step runs (`plan --live` reads them now)"
        );
        let back = recalled(&json_set(&RecordSet {
            values: vec!["192.0.2.1".into()],
            ttl: Some(300),
        }));
        assert_eq!(
            back,
            RecordSet {
                values: vec!["192.0.2.1".into()],
                ttl: Some(300)
            }
        );
        assert!(
            reject::<DnsFailover>(
                json!({"connection": "d", "name": "n", "type": "MX", "targets": []})
            )
            .starts_with("/type")
        );
    }
}
