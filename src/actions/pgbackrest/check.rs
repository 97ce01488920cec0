//! `pgbackrest.check`: prove that archiving works, end to end.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Pgbr;
use crate::actions::{
    ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When, out,
};

/// Run `pgbackrest check`: the configuration is valid, the repository is reachable and
/// decrypts, and a WAL segment the server switches to now reaches the archive. Fails when
/// archiving is broken, which makes every later backup and point-in-time recovery fail too:
/// run it before stopping anything. Needs the running cluster (`pg1-path` in the configuration).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgbackrestCheck {
    /// A `pgbackrest` connection.
    pub connection: String,
}

impl ActionSpec for PgbackrestCheck {
    const NAME: &'static str = "pgbackrest.check";
    const SUMMARY: &'static str =
        "Check that a stanza's configuration, repository and WAL archiving work";
    const OUTPUTS: &'static [Output] = &[out(
        "archived_wal",
        "the WAL segment the check switched to and saw arrive in the archive",
    )];
    // It makes the server switch WAL segments, which changes nothing a user can see.
    const READ_ONLY: When<Self> = When::Always;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let pgbr = Pgbr::from_exec(cx, &self.connection)?;
            let said = pgbr.run("check", &[]).await?;
            // "WAL segment 000000010000000000000007 successfully archived to '...'"
            let wal = said
                .split("WAL segment ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .map(String::from);
            Ok(serde_json::json!({ "archived_wal": wal }))
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        super::the_connection(&self.connection)
    }

    fn describe(&self, cx: &dyn DescribeContext) -> String {
        format!(
            "check {}: configuration, repository, and a WAL segment switched to now reaching the archive",
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
    fn is_a_read_only_check() {
        assert_eq!(
            describe::<PgbackrestCheck>(json!({"connection": "repo"})),
            "check <repo>: configuration, repository, and a WAL segment switched to now reaching the archive"
        );
        assert!(
            reject::<PgbackrestCheck>(json!({"connection": "repo", "fast": true}))
                .contains("unknown field")
        );
    }
}
