//! `postgres.resume_writers`: undo `postgres.stop_writers`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as pg, PgTarget, ident};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When, out,
    support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Restore the state `postgres.stop_writers` recorded: pass its `prior_state` output. Without it,
/// writes are re-enabled and CONNECT is granted back to `roles`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresResumeWriters {
    pub connection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// `{{ steps.<stop step>.outputs.prior_state }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_state: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl ActionSpec for PostgresResumeWriters {
    const NAME: &'static str = "postgres.resume_writers";
    const SUMMARY: &'static str =
        "Restore writes stopped by postgres.stop_writers, exactly as they were";
    const OUTPUTS: &'static [Output] = &[out("restored", "the state that was restored")];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    /// Restoring a recorded state twice leaves the same state.
    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let target = PgTarget::from_exec(cx, &self.connection, None)?;
            let state = match &self.prior_state {
                Some(serde_json::Value::String(s)) => serde_json::from_str(s).map_err(|_| {
                    ActionError::permanent(
                        "`prior_state` is not the object postgres.stop_writers recorded",
                    )
                })?,
                Some(v) => v.clone(),
                None => serde_json::Value::Null,
            };
            let db = self
                .database
                .clone()
                .or_else(|| {
                    state
                        .get("database")
                        .and_then(|d| d.as_str())
                        .map(String::from)
                })
                .unwrap_or_else(|| target.database());
            let (read_only, grant): (Option<String>, Vec<String>) = if state.is_null() {
                (None, self.roles.clone())
            } else {
                let ro = state
                    .get("read_only")
                    .and_then(|v| v.as_str())
                    .map(String::from);
                let grant = state
                    .get("connect")
                    .and_then(|c| c.as_array())
                    .ok_or_else(|| ActionError::permanent("`prior_state` has no `connect` list: pass the stop step's `prior_state` output"))?
                    .iter()
                    .filter_map(|g| g.as_str().map(String::from))
                    .collect();
                (ro, grant)
            };
            let client = target.connect().await?;
            let q = |e: tokio_postgres::Error| pg::classify(&e, "resuming writers");
            let sql = match &read_only {
                Some(v) => format!(
                    "alter database {} set default_transaction_read_only = {}",
                    ident(&db),
                    pg::literal(v)
                ),
                None => format!(
                    "alter database {} reset default_transaction_read_only",
                    ident(&db)
                ),
            };
            client.batch_execute(&sql).await.map_err(q)?;
            if !grant.is_empty() {
                let list: Vec<String> = grant
                    .iter()
                    .map(|r| if r == "PUBLIC" { r.clone() } else { ident(r) })
                    .collect();
                client
                    .batch_execute(&format!(
                        "grant connect on database {} to {}",
                        ident(&db),
                        list.join(", ")
                    ))
                    .await
                    .map_err(q)?;
            }
            Ok(
                serde_json::json!({"restored": {"database": db, "read_only": read_only, "connect": grant}}),
            )
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::Postgres])
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let db = self
            .database
            .as_deref()
            .unwrap_or("the connection's database");
        match &self.prior_state {
            Some(state) => {
                let state = state
                    .as_str()
                    .map_or_else(|| state.to_string(), String::from);
                format!(
                    "on {}: restore writes on {db} to the recorded state {state}",
                    cx.connection(&self.connection)
                )
            }
            None if self.roles.is_empty() => {
                format!(
                    "on {}: reset default_transaction_read_only on {db}",
                    cx.connection(&self.connection)
                )
            }
            None => format!(
                "on {}: reset default_transaction_read_only on {db}; grant CONNECT on {db} to {}",
                cx.connection(&self.connection),
                self.roles.join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_both_forms() {
        let d = describe::<PostgresResumeWriters>(
            json!({"connection": "db", "database": "orders", "roles": ["app_rw"]}),
        );
        assert_eq!(
            d,
            "on <db>: reset default_transaction_read_only on orders; grant CONNECT on orders to app_rw"
        );
        let d = describe::<PostgresResumeWriters>(
            json!({"connection": "db", "prior_state": "⟨steps.stop.outputs.prior_state⟩"}),
        );
        assert!(d.ends_with("to the recorded state ⟨steps.stop.outputs.prior_state⟩"));
    }
}
