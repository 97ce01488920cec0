//! `postgres.stop_writers`: stop writes to a database without stopping the server.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as pg, PgTarget, ident};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When, out,
    support::the_connection,
};
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
    const SUMMARY: &'static str =
        "Stop writes to a database (read-only default, revoke CONNECT, terminate writers)";
    const OUTPUTS: &'static [Output] = &[
        out(
            "prior_state",
            "what was changed, for resume_writers: read-only setting and CONNECT grants",
        ),
        out("terminated", "number of sessions terminated"),
        out("database", "the database stopped"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let target = PgTarget::from_exec(cx, &self.connection, None)?;
            let db = self.database.clone().unwrap_or_else(|| target.database());
            let client = target.connect().await?;
            let q = |e: tokio_postgres::Error| pg::classify(&e, "stopping writers");
            let exists = client
                .query_opt("select 1 from pg_database where datname = $1", &[&db])
                .await
                .map_err(q)?;
            if exists.is_none() {
                return Err(ActionError::permanent(format!(
                    "there is no database `{db}`"
                )));
            }
            // What is about to change, so that resume_writers restores exactly this.
            let read_only: Option<String> = client
                .query_opt(
                    "select split_part(s, '=', 2) from pg_db_role_setting r join pg_database d on d.oid = r.setdatabase, \
                     unnest(r.setconfig) s where d.datname = $1 and r.setrole = 0 and s like 'default_transaction_read_only=%'",
                    &[&db],
                )
                .await
                .map_err(q)?
                .map(|r| r.get(0));
            let grantees: Vec<String> = client
                .query(
                    "select coalesce(g.rolname, 'PUBLIC') from pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a \
                     left join pg_roles g on g.oid = a.grantee where d.datname = $1 and a.privilege_type = 'CONNECT'",
                    &[&db],
                )
                .await
                .map_err(q)?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // The roles keep CONNECT through PUBLIC unless PUBLIC loses it too.
            let mut revoke: Vec<String> = Vec::new();
            if !self.roles.is_empty() {
                revoke.push("PUBLIC".into());
                revoke.extend(self.roles.iter().cloned());
            }
            let had: Vec<String> = revoke
                .iter()
                .filter(|r| grantees.contains(r))
                .cloned()
                .collect();
            let prior = serde_json::json!({"database": db, "read_only": read_only, "connect": had});

            client
                .batch_execute(&format!(
                    "alter database {} set default_transaction_read_only = on",
                    ident(&db)
                ))
                .await
                .map_err(q)?;
            if !revoke.is_empty() {
                let list: Vec<String> = revoke
                    .iter()
                    .map(|r| if r == "PUBLIC" { r.clone() } else { ident(r) })
                    .collect();
                client
                    .batch_execute(&format!(
                        "revoke connect on database {} from {}",
                        ident(&db),
                        list.join(", ")
                    ))
                    .await
                    .map_err(q)?;
            }
            let mut terminated = 0i64;
            if self.terminate && !self.roles.is_empty() {
                terminated = client
                    .query_one(
                        "select count(pg_terminate_backend(pid)) from pg_stat_activity \
                         where datname = $1 and usename = any($2) and pid <> pg_backend_pid()",
                        &[&db, &self.roles],
                    )
                    .await
                    .map_err(q)?
                    .get(0);
            }
            // Sessions that were already open keep their old default: wait for their write
            // transactions to end (the step's timeout bounds the wait).
            loop {
                let open: i64 = client
                    .query_one(
                        "select count(*) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid() and backend_xid is not null",
                        &[&db],
                    )
                    .await
                    .map_err(q)?
                    .get(0);
                if open == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Ok(serde_json::json!({"prior_state": prior, "terminated": terminated, "database": db}))
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
        let mut parts = vec![format!("set default_transaction_read_only on {db}")];
        if !self.roles.is_empty() {
            parts.push(format!(
                "revoke CONNECT on {db} from PUBLIC, {}",
                self.roles.join(", ")
            ));
            if self.terminate {
                parts.push(format!(
                    "terminate the sessions of {}",
                    self.roles.join(", ")
                ));
            }
        }
        parts.push("wait until no write transaction is open".into());
        format!(
            "on {}: {}",
            cx.connection(&self.connection),
            parts.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn says_exactly_what_it_does() {
        let d = describe::<PostgresStopWriters>(
            json!({"connection": "db", "database": "orders", "roles": ["app_rw"]}),
        );
        assert_eq!(
            d,
            "on <db>: set default_transaction_read_only on orders; revoke CONNECT on orders from PUBLIC, app_rw; \
             terminate the sessions of app_rw; wait until no write transaction is open"
        );
    }
}
