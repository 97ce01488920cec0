//! `postgres.promote`: promote a streaming replica to primary.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as pg, PgTarget};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Effect, Exec, Output,
    When, out, support::the_connection,
};
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
        out(
            "replay_lag_bytes",
            "WAL received but not replayed at promotion",
        ),
        out(
            "replayed_at",
            "commit time of the last replayed transaction (RFC 3339), for RPO",
        ),
        out(
            "replay_lag_seconds",
            "how far replay trailed the last commit it had received, at promotion",
        ),
        out("lsn", "the replay position at promotion"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const CHANGES: Effect = Effect::Irreversible;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;
    const RESTORED_AS_OF: Option<&'static str> = Some("replayed_at");

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let wait = match self.wait.as_ref().and_then(|d| d.0.as_str()) {
                Some(t) => crate::runbook::duration::parse(t).map_err(ActionError::permanent)?,
                None => std::time::Duration::from_secs(60),
            };
            let target = PgTarget::from_exec(cx, &self.connection, None)?;
            let client = target.connect().await?;
            let q = |e: tokio_postgres::Error| pg::classify(&e, "promoting");
            let in_recovery: bool = client
                .query_one("select pg_is_in_recovery()", &[])
                .await
                .map_err(q)?
                .get(0);
            if !in_recovery {
                return Err(ActionError::permanent(
                    "the server is not a replica (pg_is_in_recovery() is false): nothing to promote; is the connection pointing at the primary?",
                ));
            }
            // Where the replica stood: what a failover to it keeps (the RPO side).
            let row = client
                .query_one(
                    "select coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0)::float8, \
                            pg_last_xact_replay_timestamp(), \
                            coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()), 0)::float8, \
                            pg_last_wal_replay_lsn()::text",
                    &[],
                )
                .await
                .map_err(q)?;
            let lag_bytes: f64 = row.get(0);
            let replayed_at: Option<jiff::Timestamp> = row.get(1);
            let lag_seconds: f64 = row.get(2);
            let lsn: Option<String> = row.get(3);
            let secs = wait.as_secs().clamp(1, i32::MAX as u64) as i32;
            let done: bool = client
                .query_one("select pg_promote(true, $1)", &[&secs])
                .await
                .map_err(q)?
                .get(0);
            if !done {
                return Err(ActionError::transient(format!(
                    "the promotion did not finish within {}",
                    crate::runbook::duration::format(wait)
                )));
            }
            // Accepting writes, seen from a fresh session: txid_current() fails on a standby.
            let check = target.connect().await?;
            check
                .query_one("select txid_current()", &[])
                .await
                .map_err(|e| pg::classify(&e, "checking that it takes writes"))?;
            let timeline: i32 = check
                .query_one("select ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int", &[])
                .await
                .map_err(q)?
                .get(0);
            Ok(serde_json::json!({
                "timeline": timeline,
                "replay_lag_bytes": lag_bytes as i64,
                "replayed_at": replayed_at.map(|t| t.to_string()),
                "replay_lag_seconds": lag_seconds,
                "lsn": lsn,
            }))
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::Postgres])
    }
    fn check(&self) -> Vec<crate::actions::WithProblem> {
        crate::actions::WithProblem::duration("/wait", self.wait.as_ref())
            .into_iter()
            .collect()
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let wait = self
            .wait
            .as_ref()
            .and_then(|d| d.0.as_str())
            .unwrap_or("60s");
        format!(
            "promote the replica {} with pg_promote; wait up to {wait} until it accepts writes",
            cx.connection(&self.connection)
        )
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
        assert_eq!(
            p.describe(&Cx),
            "promote the replica <replica> with pg_promote; wait up to 60s until it accepts writes"
        );
    }
}
