//! `pgbackrest.backup`: a full, differential or incremental physical backup.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Pgbr;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When, out,
};

/// Which files a backup copies.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PgbackrestBackupType {
    /// Every file.
    Full,
    /// What changed since the last full backup.
    Diff,
    /// What changed since the last backup of any type (the default).
    #[default]
    Incr,
}

impl PgbackrestBackupType {
    fn as_str(self) -> &'static str {
        match self {
            PgbackrestBackupType::Full => "full",
            PgbackrestBackupType::Diff => "diff",
            PgbackrestBackupType::Incr => "incr",
        }
    }
}

/// Take a physical backup of the running cluster with `pgbackrest backup` (an online backup:
/// writers keep writing; WAL archiving makes it consistent). pgBackRest makes a `diff` or
/// `incr` with no full backup to base it on a `full`, and says so in `type`. Running it again
/// takes another backup; an interrupted one is resumed by pgBackRest where it can.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgbackrestBackup {
    /// A `pgbackrest` connection.
    pub connection: String,
    /// `full`, `diff` or `incr` (default).
    #[serde(default, rename = "type")]
    pub kind: PgbackrestBackupType,
}

impl ActionSpec for PgbackrestBackup {
    const NAME: &'static str = "pgbackrest.backup";
    const SUMMARY: &'static str = "Take a full, differential or incremental pgBackRest backup";
    const OUTPUTS: &'static [Output] = &[
        out(
            "label",
            "the backup's label, e.g. 20261130-223042F_20261130-223129I",
        ),
        out("type", "full, diff or incr: what pgBackRest took"),
        out("started_at", "when it started (RFC 3339)"),
        out(
            "stopped_at",
            "when it finished (RFC 3339): the earliest time it can restore to",
        ),
        out("lsn_start", "the WAL position it started at"),
        out("lsn_stop", "the WAL position it stopped at"),
        out("wal_start", "the first WAL segment it needs"),
        out("wal_stop", "the last WAL segment it needs"),
        out("size_bytes", "the cluster's size"),
        out("delta_bytes", "what this backup copied"),
        out(
            "repo_size_bytes",
            "the backup's size in the repository, compressed",
        ),
        out("repo_delta_bytes", "what this backup stored, compressed"),
        out(
            "prior",
            "the backup an incremental or differential one builds on",
        ),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn idempotent(&self) -> bool {
        // Another backup is harmless; pgBackRest resumes or cleans up one that was cut short.
        true
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let pgbr = Pgbr::from_exec(cx, &self.connection)?;
            // Refuses a stanza that does not exist or a wrong passphrase with a clear sentence.
            let before = pgbr.info().await?;
            (cx.progress)(&format!("taking a {} backup", self.kind.as_str()));
            pgbr.run("backup", &[format!("--type={}", self.kind.as_str())])
                .await?;
            let after = pgbr.info().await?;
            let new = after
                .backup
                .iter()
                .filter(|b| !before.backup.iter().any(|o| o.label == b.label))
                .max_by_key(|b| b.timestamp.stop)
                .ok_or_else(|| {
                    ActionError::permanent(
                        "pgbackrest backup succeeded but the repository lists no new backup",
                    )
                })?;
            Ok(new.outputs())
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        super::the_connection(&self.connection)
    }

    fn describe(&self, cx: &dyn DescribeContext) -> String {
        format!(
            "take {} pgBackRest backup of {} (online; writers keep writing)",
            match self.kind {
                PgbackrestBackupType::Full => "a full",
                PgbackrestBackupType::Diff => "a differential",
                PgbackrestBackupType::Incr => "an incremental",
            },
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
    fn incremental_by_default() {
        assert_eq!(
            describe::<PgbackrestBackup>(json!({"connection": "repo"})),
            "take an incremental pgBackRest backup of <repo> (online; writers keep writing)"
        );
        assert!(
            reject::<PgbackrestBackup>(json!({"connection": "repo", "type": "weekly"}))
                .contains("unknown variant")
        );
    }
}
