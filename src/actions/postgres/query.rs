//! `postgres.query`: run SQL and return the rows.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as pg, PgTarget};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Language, Output,
    When, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Run one SQL statement with bind parameters (`$1`, `$2`, ...). Unless `writes` is true it runs in
/// a read-only transaction, so a verification query cannot change data by mistake.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresQuery {
    /// A `postgres` connection.
    pub connection: String,
    pub sql: String,
    /// Values for `$1`, `$2`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<serde_json::Value>,
    /// Allow the statement to write.
    #[serde(default)]
    pub writes: bool,
}

impl ActionSpec for PostgresQuery {
    const NAME: &'static str = "postgres.query";
    const SUMMARY: &'static str = "Run SQL and return the rows (read-only unless `writes: true`)";
    const OUTPUTS: &'static [Output] = &[
        out(
            "rows",
            "the rows, each an object of column name to typed JSON value",
        ),
        out("row_count", "rows returned, or affected for a write"),
    ];
    const READ_ONLY: When<Self> = When::If {
        what: "without `writes`",
        test: |a| !a.writes,
    };
    const DESTRUCTIVE: When<Self> = When::If {
        what: "with `writes`",
        test: |a| a.writes,
    };
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let target = PgTarget::from_exec(cx, &self.connection, None)?;
            let mut client = target.connect().await?;
            let rows = if self.writes {
                // Autocommit: some statements (REINDEX DATABASE, VACUUM) refuse a transaction block.
                let (stmt, args) = prepare(&client, &self.sql, &self.params).await?;
                let refs = pg::refs(&args);
                if stmt.columns().is_empty() {
                    let n = client
                        .execute(&stmt, &refs)
                        .await
                        .map_err(|e| pg::classify(&e, "running"))?;
                    return Ok(serde_json::json!({"rows": [], "row_count": n}));
                }
                client
                    .query(&stmt, &refs)
                    .await
                    .map_err(|e| pg::classify(&e, "running"))?
            } else {
                let tx = client
                    .build_transaction()
                    .read_only(true)
                    .start()
                    .await
                    .map_err(|e| pg::classify(&e, "starting a read-only transaction"))?;
                let (stmt, args) = prepare(&tx, &self.sql, &self.params).await?;
                let rows = tx
                    .query(&stmt, &pg::refs(&args))
                    .await
                    .map_err(|e| pg::classify(&e, "running"))?;
                tx.commit()
                    .await
                    .map_err(|e| pg::classify(&e, "committing"))?;
                rows
            };
            let out: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| pg::row_json(r).map(serde_json::Value::Object))
                .collect::<Result<_, ActionError>>()?;
            Ok(serde_json::json!({"row_count": out.len(), "rows": out}))
        })
    }

    fn code(&self) -> Vec<(String, Language)> {
        vec![("/sql".into(), Language::Sql)]
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::Postgres])
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let sql = self.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        let mode = if self.writes { "run" } else { "run read-only" };
        let params = if self.params.is_empty() {
            String::new()
        } else {
            format!(
                " with params {}",
                serde_json::Value::Array(self.params.clone())
            )
        };
        format!(
            "{mode} on {}: {sql}{params}",
            cx.connection(&self.connection)
        )
    }
}

/// The statement, prepared, and its params bound as the types the server asks for.
async fn prepare<C: tokio_postgres::GenericClient>(
    client: &C,
    sql: &str,
    params: &[serde_json::Value],
) -> Result<(tokio_postgres::Statement, Vec<pg::Bound>), ActionError> {
    let stmt = client
        .prepare(sql)
        .await
        .map_err(|e| pg::classify(&e, "preparing"))?;
    let args = pg::bind(params, stmt.params())?;
    Ok((stmt, args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Effect;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn read_only_unless_told() {
        let q = parse::<PostgresQuery>(
            json!({"connection": "db", "sql": "select\n  count(*) from orders"}),
        );
        assert_eq!(q.effect(), Effect::ReadOnly);
        assert_eq!(
            q.describe(&Cx),
            "run read-only on <db>: select count(*) from orders"
        );
        let w = parse::<PostgresQuery>(
            json!({"connection": "db", "sql": "delete from t where id=$1", "params": [4], "writes": true}),
        );
        assert!(w.destructive());
        assert_eq!(
            w.describe(&Cx),
            "run on <db>: delete from t where id=$1 with params [4]"
        );
    }

    #[test]
    fn unknown_field_named() {
        assert!(
            reject::<PostgresQuery>(json!({"connection": "db", "query": "x"}))
                .contains("unknown field `query`")
        );
    }
}
