//! `backup.verify`: prove a backup restores, then mark its manifest verified.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::BackupLocation;
use crate::actions::postgres::PgTarget;
use crate::actions::s3::{self, S3};
use crate::actions::support::pg_swap as swap;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Language, Output,
    When, WithProblem, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Restore a backup into a scratch database, run the verification queries there, drop the scratch
/// database, and mark the backup's manifest `verified` (the weekly "validate backups" job).
/// `s3.latest` with `verified_only` then finds only backups that passed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupVerify {
    /// A `postgres` connection to a server where a scratch database may be created and dropped.
    pub connection: String,
    /// The backup, in S3 (`connection` + `key`), with its manifest beside it.
    pub from: BackupLocation,
    /// age identity or passphrase, usually `{{ secrets.NAME }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrypt_with: Option<String>,
    /// SQL run in the scratch database; each must return one row whose first column is true,
    /// e.g. `select count(*) > 0 from orders`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<String>,
}

impl ActionSpec for BackupVerify {
    const NAME: &'static str = "backup.verify";
    const SUMMARY: &'static str =
        "Restore a backup into a scratch database, check it, mark it verified";
    const OUTPUTS: &'static [Output] = &[
        out(
            "verified",
            "true when the backup restored and every query held",
        ),
        out(
            "scratch_database",
            "the scratch database used (dropped afterwards)",
        ),
        out("results", "each query with its first column"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    /// A second verification of the same backup does the same.
    fn idempotent(&self) -> bool {
        true
    }
    fn code(&self) -> Vec<(String, Language)> {
        (0..self.queries.len())
            .map(|i| (format!("/queries/{i}"), Language::Sql))
            .collect()
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        let mut c = the_connection(&self.connection, &[ConnectionKind::Postgres]);
        c.extend(self.from.connections("/from/connection"));
        c
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.from.check("/from");
        if self.from.path.is_some() {
            p.push(WithProblem::new(
                "/from",
                "backup.verify marks a manifest in S3: give `connection` and `key`",
            ));
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        format!(
            "restore {} into a scratch database on {}, run {} verification quer{}, drop it, and mark the manifest verified",
            self.from.describe(cx),
            cx.connection(&self.connection),
            self.queries.len(),
            if self.queries.len() == 1 { "y" } else { "ies" }
        )
    }
    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(verify(self, cx))
    }
}

async fn verify(w: &BackupVerify, cx: &Exec<'_>) -> Result<serde_json::Value, ActionError> {
    let (Some(conn), Some(key)) = (&w.from.connection, &w.from.key) else {
        return Err(ActionError::permanent("give `from: {connection, key}`"));
    };
    // What is marked at the end must be there before hours go into a restore.
    let s3c = S3::from_exec(cx, conn).await?;
    let mkey = s3::manifest_key(key);
    let Some(mut manifest) = super::read_manifest(&s3c, key).await? else {
        let legacy = crate::actions::postgres::restore::legacy_checksum(&s3c, key)
            .await
            .ok()
            .flatten()
            .is_some();
        return Err(ActionError::permanent(if legacy {
            format!(
                "s3://{}/{key} is a legacy backup (a `.sha256` beside it, no manifest): backup.verify marks manifests, so it cannot mark this one; restore it with postgres.restore to test it",
                s3c.bucket
            )
        } else {
            format!(
                "no manifest s3://{}/{mkey} to mark verified; nothing was restored",
                s3c.bucket
            )
        }));
    };
    // Named by run and step, not attempt: a leftover of a killed attempt is the one dropped here.
    let scratch = format!("lifeboat_verify_{}", swap::run_step_id(cx.run_id, cx.step));
    let restore = crate::actions::postgres::restore::PostgresRestore {
        connection: w.connection.clone(),
        database: Some(scratch.clone()),
        from: w.from.clone(),
        mode: crate::actions::postgres::restore::Mode::Swap,
        jobs: None,
        decrypt_with: w.decrypt_with.clone(),
        sha256: None,
        count_tables: Vec::new(),
        verify: w.queries.clone(),
        clean: None,
        create: None,
    };
    let admin = {
        let t = PgTarget::from_exec(cx, &w.connection, Some(&scratch))?;
        swap::admin_for(&t, &scratch)
    };
    let drop_scratch = || async {
        let c = admin.connect().await?;
        swap::drop_if_exists(&c, &scratch).await
    };
    drop_scratch().await?;
    let checked = crate::actions::postgres::restore::restore(&restore, cx).await;
    let dropped = drop_scratch().await;
    let restored = checked?;
    dropped?;
    let results = restored
        .get("verified")
        .cloned()
        .unwrap_or_else(|| serde_json::json!([]));
    // Mark the manifest: s3.latest with verified_only trusts only backups that got here.
    manifest["verified"] = true.into();
    manifest["verified_at"] = crate::runlog::now_rfc3339().into();
    manifest["verified_by_run"] = cx.run_id.into();
    s3::put_json(&s3c, &mkey, &manifest).await?;
    Ok(serde_json::json!({"verified": true, "scratch_database": scratch, "results": results}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_and_needs_an_object() {
        let d = describe::<BackupVerify>(
            json!({"connection": "db", "from": {"connection": "b", "key": "k"}, "queries": ["select true"]}),
        );
        assert_eq!(
            d,
            "restore object k in <b> into a scratch database on <db>, run 1 verification query, drop it, and mark the manifest verified"
        );
        assert_eq!(
            parse::<BackupVerify>(json!({"connection": "db", "from": {"path": "x"}}))
                .check()
                .len(),
            1
        );
    }
}
