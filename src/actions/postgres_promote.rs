//! `postgres.promote`: promote a streaming replica to primary.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, ConnectionUse, DescribeContext, Effect, Output, out, shared::connection};
use crate::runbook::{ConnectionKind, DurationText};

/// Promote a streaming replica (pg_promote) and wait until it accepts writes. It cannot be undone:
/// the old primary must be rebuilt from the new one.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresPromote {
    /// A `postgres` connection to the replica.
    pub connection: String,
    /// How long to wait for the promotion to finish (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<DurationText>,
}

impl ActionSpec for PostgresPromote {
    const NAME: &'static str = "postgres.promote";
    const SUMMARY: &'static str = "Promote a streaming replica and wait until it takes writes";
    const OUTPUTS: &'static [Output] = &[
        out("timeline", "the new timeline id"),
        out("replay_lag_bytes", "WAL received but not replayed at promotion"),
        out("replayed_at", "commit time of the last replayed transaction (RFC 3339), for RPO"),
    ];

    fn effect(&self) -> Effect {
        Effect::Irreversible
    }
    fn destructive(&self) -> bool {
        true
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        vec![connection("/connection", &self.connection, &[ConnectionKind::Postgres])]
    }
    fn check(&self) -> Vec<super::WithProblem> {
        super::WithProblem::duration("/wait", self.wait.as_ref()).into_iter().collect()
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let wait = self.wait.as_ref().and_then(|d| d.0.as_str()).unwrap_or("60s");
        format!("promote the replica {} with pg_promote; wait up to {wait} until it accepts writes", cx.connection(&self.connection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn is_irreversible() {
        let p = parse::<PostgresPromote>(json!({"connection": "replica"}));
        assert_eq!(p.effect(), Effect::Irreversible);
        assert_eq!(p.describe(&Cx), "promote the replica <replica> with pg_promote; wait up to 60s until it accepts writes");
    }
}
