//! `postgres.resume_writers`: undo `postgres.stop_writers`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, ConnectionUse, DescribeContext, Effect, Output, out, shared::connection};
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
    const SUMMARY: &'static str = "Restore writes stopped by postgres.stop_writers, exactly as they were";
    const OUTPUTS: &'static [Output] = &[out("restored", "the state that was restored")];

    fn effect(&self) -> Effect {
        Effect::Changes
    }
    fn destructive(&self) -> bool {
        false
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        vec![connection("/connection", &self.connection, &[ConnectionKind::Postgres])]
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let db = self.database.as_deref().unwrap_or("the connection's database");
        match &self.prior_state {
            Some(state) => {
                let state = state.as_str().map_or_else(|| state.to_string(), String::from);
                format!("on {}: restore writes on {db} to the recorded state {state}", cx.connection(&self.connection))
            }
            None if self.roles.is_empty() => {
                format!("on {}: reset default_transaction_read_only on {db}", cx.connection(&self.connection))
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
        let d = describe::<PostgresResumeWriters>(json!({"connection": "db", "database": "orders", "roles": ["app_rw"]}));
        assert_eq!(d, "on <db>: reset default_transaction_read_only on orders; grant CONNECT on orders to app_rw");
        let d = describe::<PostgresResumeWriters>(json!({"connection": "db", "prior_state": "⟨steps.stop.outputs.prior_state⟩"}));
        assert!(d.ends_with("to the recorded state ⟨steps.stop.outputs.prior_state⟩"));
    }
}
