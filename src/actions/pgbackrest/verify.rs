//! `pgbackrest.verify`: read back what the repository holds and check every checksum.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Pgbr;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When, out,
};

/// Run `pgbackrest verify`: every backup file and WAL segment in the repository is read,
/// decrypted and checked against its checksum, and the WAL is checked for gaps. Fails when
/// anything is missing, corrupt or unreadable, naming what.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgbackrestVerify {
    /// A `pgbackrest` connection.
    pub connection: String,
}

impl ActionSpec for PgbackrestVerify {
    const NAME: &'static str = "pgbackrest.verify";
    const SUMMARY: &'static str =
        "Verify every backup file and WAL segment in a pgBackRest repository";
    const OUTPUTS: &'static [Output] = &[out(
        "report",
        "pgBackRest's verify report, one line per archive range and backup",
    )];
    const READ_ONLY: When<Self> = When::Always;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let pgbr = Pgbr::from_exec(cx, &self.connection)?;
            let said = pgbr
                .run("verify", &["--output=text".into(), "--verbose".into()])
                .await?;
            let report: Vec<&str> = said
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.contains(" INFO: ") && !l.contains(" DETAIL: "))
                .collect();
            // pgBackRest 2.45 exits 0 with `status: error` in its report when files are bad.
            if let Some(bad) = report
                .iter()
                .find(|l| l.starts_with("status:") && !l.ends_with("ok"))
            {
                return Err(ActionError::permanent(format!(
                    "the repository failed verification ({bad}): {}",
                    report.join("; ")
                )));
            }
            Ok(serde_json::json!({ "report": report }))
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        super::the_connection(&self.connection)
    }

    fn describe(&self, cx: &dyn DescribeContext) -> String {
        format!(
            "read back every backup file and WAL segment of {} and check their checksums",
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
    fn reads_only() {
        let a = parse::<PgbackrestVerify>(json!({"connection": "repo"}));
        assert_eq!(a.effect(), crate::actions::Effect::ReadOnly);
    }
}
