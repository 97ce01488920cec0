//! `postgres.swap_back`: undo a swap restore, putting the kept database back under its name.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::PgTarget;
use crate::actions::support::pg_swap as swap;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When, out,
    support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Put the database a `postgres.restore` kept (`kept_database`) back under the target's name,
/// keeping the restored one as `<db>__undone_<id>`; the compensation of a swap restore. One
/// transaction, so a failure changes nothing. Each database keeps its own grants and settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSwapBack {
    pub connection: String,
    /// The database the restore replaced; the connection's database when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// The restore's `kept_database` output, usually `{{ outputs.kept_database }}`. Null when
    /// the restore created the database (there was none to keep): then it is only moved aside,
    /// leaving the name as free as it was.
    pub kept_database: Option<String>,
}

impl ActionSpec for PostgresSwapBack {
    const NAME: &'static str = "postgres.swap_back";
    const SUMMARY: &'static str = "Undo a swap restore: put the kept database back";
    const OUTPUTS: &'static [Output] = &[
        out("database", "the database put back"),
        out(
            "undone_database",
            "the name the restored database is kept under",
        ),
        out("ended_sessions", "sessions of the restored database ended"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;

    /// Once the kept database is back, a second run finds nothing to swap and says so.
    fn idempotent(&self) -> bool {
        true
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::Postgres])
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let db = self
            .database
            .as_deref()
            .unwrap_or("the connection's database");
        let undone = match &self.database {
            Some(d) => format!("{d}__undone_<id>"),
            None => "<database>__undone_<id>".into(),
        };
        match &self.kept_database {
            Some(kept) => format!(
                "on {}: end the sessions of {db}, rename it to {undone} and {kept} back to {db}",
                cx.connection(&self.connection),
            ),
            None => format!(
                "on {}: end the sessions of {db} and rename it to {undone} (the restore created it)",
                cx.connection(&self.connection),
            ),
        }
    }
    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let target = PgTarget::from_exec(cx, &self.connection, self.database.as_deref())?;
            let db = target.database();
            let admin = swap::admin_for(&target, &db);
            let client = admin.connect().await?;
            let undone = swap::derived_name(&db, "undone", &swap::run_step_id(cx.run_id, cx.step));
            let done = |ended: i64| serde_json::json!({"database": db, "undone_database": undone, "ended_sessions": ended});
            let Some(kept) = &self.kept_database else {
                if swap::oid_of(&client, &db).await?.is_none() {
                    return Ok(done(0));
                }
                let s = swap::swap_in(&admin, &db, None, &undone, false).await?;
                return Ok(done(s.ended_sessions));
            };
            if swap::oid_of(&client, kept).await?.is_none() {
                // Already swapped back (an attempt whose success was not recorded), or gone.
                if swap::oid_of(&client, &undone).await?.is_some() {
                    return Ok(done(0));
                }
                return Err(ActionError::permanent(format!(
                    "there is no database {kept} to put back as {db}; nothing was changed"
                )));
            }
            let s = swap::swap_in(&admin, &db, Some(kept), &undone, false).await?;
            Ok(done(s.ended_sessions))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn a_restore_that_created_the_database_is_undone_by_moving_it_aside() {
        let d = describe::<PostgresSwapBack>(
            json!({"connection": "db", "database": "orders", "kept_database": null}),
        );
        assert_eq!(
            d,
            "on <db>: end the sessions of orders and rename it to orders__undone_<id> (the restore created it)"
        );
    }

    #[test]
    fn says_what_it_puts_back() {
        let d = describe::<PostgresSwapBack>(
            json!({"connection": "db", "database": "orders", "kept_database": "orders__before_ab"}),
        );
        assert_eq!(
            d,
            "on <db>: end the sessions of orders, rename it to orders__undone_<id> and orders__before_ab back to orders"
        );
    }
}
