//! `postgres.stop_writers`: stop writes to a database without stopping the server.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, ConnectionUse, DescribeContext, Effect, Output, out, shared::connection};
use crate::runbook::ConnectionKind;

/// Make a database read-only for new sessions, revoke CONNECT from the writer roles, terminate their
/// sessions and wait until no write transaction is left. The prior state is an output, so
/// `postgres.resume_writers` (or a `compensate`) restores exactly what was there.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresStopWriters {
    /// A `postgres` connection with rights to alter the database.
    pub connection: String,
    /// The database to stop; the connection's database when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Roles whose CONNECT is revoked and whose sessions are terminated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Terminate the roles' open sessions (default true).
    #[serde(default = "yes")]
    pub terminate: bool,
}

fn yes() -> bool {
    true
}

impl ActionSpec for PostgresStopWriters {
    const NAME: &'static str = "postgres.stop_writers";
    const SUMMARY: &'static str = "Stop writes to a database (read-only default, revoke CONNECT, terminate writers)";
    const OUTPUTS: &'static [Output] = &[
        out("prior_state", "what was changed, for resume_writers: read-only setting and CONNECT grants"),
        out("terminated", "number of sessions terminated"),
    ];

    fn effect(&self) -> Effect {
        Effect::Changes
    }
    fn destructive(&self) -> bool {
        true
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        vec![connection("/connection", &self.connection, &[ConnectionKind::Postgres])]
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let db = self.database.as_deref().unwrap_or("the connection's database");
        let mut parts = vec![format!("set default_transaction_read_only on {db}")];
        if !self.roles.is_empty() {
            parts.push(format!("revoke CONNECT on {db} from {}", self.roles.join(", ")));
            if self.terminate {
                parts.push(format!("terminate the sessions of {}", self.roles.join(", ")));
            }
        }
        parts.push("wait until no write transaction is open".into());
        format!("on {}: {}", cx.connection(&self.connection), parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn says_exactly_what_it_does() {
        let d = describe::<PostgresStopWriters>(json!({"connection": "db", "database": "orders", "roles": ["app_rw"]}));
        assert_eq!(
            d,
            "on <db>: set default_transaction_read_only on orders; revoke CONNECT on orders from app_rw; \
             terminate the sessions of app_rw; wait until no write transaction is open"
        );
    }
}
