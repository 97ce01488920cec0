//! `postgres.restore`: pg_restore a backup into a database.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as pg, PgTarget, ident};
use crate::actions::backup::BackupLocation;
use crate::actions::support::process::{pg_tool, run_tool, sha256_file};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, Tpl, When,
    WithProblem, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Restore a backup made by `postgres.backup` (or a legacy gzip+openssl dump) into a database. The
/// backup's checksum is verified before anything in the target is touched.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresRestore {
    pub connection: String,
    /// The target database; the connection's database when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub from: BackupLocation,
    /// Drop objects before recreating them.
    #[serde(default)]
    pub clean: bool,
    /// Create the database first.
    #[serde(default)]
    pub create: bool,
    /// Parallel jobs for pg_restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Tpl<u32>>,
    /// age identity (private key) or passphrase to decrypt with, usually `{{ secrets.NAME }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrypt_with: Option<String>,
    /// The backup's expected SHA-256; when absent, the manifest beside the backup gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Tables whose row counts are reported as outputs after the restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub count_tables: Vec<String>,
}

impl ActionSpec for PostgresRestore {
    const NAME: &'static str = "postgres.restore";
    const SUMMARY: &'static str = "Restore a verified backup into a database with pg_restore";
    const OUTPUTS: &'static [Output] = &[
        out("sha256", "SHA-256 of the backup, verified"),
        out("counts", "row counts of `count_tables`, by table"),
        out(
            "consistent_at",
            "the time the restored data is consistent with, from the manifest",
        ),
        out("database", "the database restored into"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;
    const RESTORED_AS_OF: Option<&'static str> = Some("consistent_at");

    fn unsupported(&self) -> Option<String> {
        if self.from.path.is_some() && self.decrypt_with.is_some() {
            return Some(
                "`decrypt_with` applies to backups in S3; a local file is pg_dump's own format"
                    .into(),
            );
        }
        None
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(restore(self, cx))
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        let mut c = the_connection(&self.connection, &[ConnectionKind::Postgres]);
        c.extend(self.from.connections("/from/connection"));
        c
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.from.check("/from");
        if let Some(Tpl::Value(0)) = self.jobs {
            p.push(WithProblem::new("/jobs", "`jobs` must be at least 1"));
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let db = self
            .database
            .as_deref()
            .unwrap_or("the connection's database");
        let mut how = Vec::new();
        if self.create {
            how.push("create the database".to_string());
        }
        if self.clean {
            how.push("drop existing objects first".to_string());
        }
        if let Some(j) = &self.jobs {
            how.push(format!("{j} jobs"));
        }
        let how = if how.is_empty() {
            String::new()
        } else {
            format!(" ({})", how.join(", "))
        };
        let counts = if self.count_tables.is_empty() {
            String::new()
        } else {
            format!("; then count rows of {}", self.count_tables.join(", "))
        };
        format!(
            "verify the checksum of {}, then pg_restore it into {db} on {}{how}{counts}",
            self.from.describe(cx),
            cx.connection(&self.connection)
        )
    }
}

pub(crate) async fn restore(
    w: &PostgresRestore,
    cx: &Exec<'_>,
) -> Result<serde_json::Value, ActionError> {
    if let (Some(conn), Some(key)) = (&w.from.connection, &w.from.key) {
        let (plain, manifest, sha) = fetch(w, cx, conn, key).await?;
        let result = restore_file(w, cx, &plain, manifest, sha).await;
        let _ = std::fs::remove_file(&plain);
        return result;
    }
    let path = std::path::PathBuf::from(
        w.from
            .path
            .as_deref()
            .ok_or_else(|| ActionError::permanent("`from.path` is required"))?,
    );
    // Everything about the backup is checked before anything in the target is touched.
    let (digest, _) = sha256_file(&path).map_err(|e| {
        ActionError::permanent(format!("cannot read the backup {}: {e}", path.display()))
    })?;
    let actual = crate::runlog::hex(&digest);
    let manifest: Option<serde_json::Value> = std::fs::read(super::backup::manifest_path(&path))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let expected = expected_sha256(w, manifest.as_ref()).ok_or_else(|| {
        ActionError::permanent(format!(
            "nothing to verify {} against: give `sha256`, or keep the manifest postgres.backup wrote beside it",
            path.display()
        ))
    })?;
    if actual != expected {
        return Err(ActionError::permanent(format!(
            "the backup {} has SHA-256 {actual}, expected {expected}: it is corrupt or not the backup meant; nothing was restored",
            path.display()
        )));
    }
    restore_file(w, cx, &path, manifest, actual).await
}

/// The SHA-256 a backup must have: the one the step gives, else the one its manifest records.
fn expected_sha256(w: &PostgresRestore, manifest: Option<&serde_json::Value>) -> Option<String> {
    match &w.sha256 {
        Some(s) => Some(s.to_ascii_lowercase()),
        None => manifest?.get("sha256")?.as_str().map(String::from),
    }
}

/// Downloads, verifies and opens a backup from S3 into a local plain dump. Everything is checked
/// (the object's SHA-256 against the manifest, age's authentication) before the target is touched.
async fn fetch(
    w: &PostgresRestore,
    cx: &Exec<'_>,
    conn: &str,
    key: &str,
) -> Result<(std::path::PathBuf, Option<serde_json::Value>, String), ActionError> {
    use crate::actions::support::pipeline::{Opener, fetch_from_s3};
    let s3c = crate::actions::s3::S3::from_exec(cx, conn).await?;
    let mkey = crate::actions::s3::manifest_key(key);
    let manifest: Option<serde_json::Value> =
        match crate::actions::s3::get_optional(&s3c, &mkey).await? {
            Some(b) => Some(serde_json::from_slice(&b).map_err(|e| {
                ActionError::permanent(format!("the manifest {mkey} is not JSON: {e}"))
            })?),
            None => None,
        };
    let expected = match expected_sha256(w, manifest.as_ref()) {
        Some(s) => s,
        // The legacy scripts uploaded `sha256sum` output beside the backup.
        None => match legacy_checksum(&s3c, key).await? {
            Some(s) => s,
            None => {
                return Err(ActionError::permanent(format!(
                    "nothing to verify s3://{}/{key} against: no manifest or `.sha256` beside it, and no `sha256` given; nothing was restored",
                    s3c.bucket
                )));
            }
        },
    };
    let sealing = manifest
        .as_ref()
        .and_then(|m| m.get("encryption"))
        .and_then(|e| e.as_str())
        .map(String::from);
    let opener = match (sealing.as_deref(), &w.decrypt_with) {
        (Some("none"), _) | (None, None) => Opener::None,
        // An identity file (`age-keygen` output) has comment lines before the key.
        (Some("age-x25519"), Some(k)) | (None, Some(k))
            if k.lines().any(|l| l.trim().starts_with("AGE-SECRET-KEY-")) =>
        {
            Opener::Identity(
                k.lines()
                    .map(str::trim)
                    .find(|l| l.starts_with("AGE-SECRET-KEY-"))
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e| {
                        ActionError::permanent(format!(
                            "`decrypt_with` is not an age identity: {e}"
                        ))
                    })?,
            )
        }
        (Some("age-scrypt"), Some(p)) | (None, Some(p)) => Opener::Passphrase(p.clone()),
        (Some(kind), None) => {
            return Err(ActionError::permanent(format!(
                "the backup is encrypted ({kind}); give `decrypt_with`; nothing was restored"
            )));
        }
        (Some(kind), Some(_)) => {
            return Err(ActionError::permanent(format!(
                "the backup is encrypted with {kind}, which `decrypt_with` does not fit; nothing was restored"
            )));
        }
    };
    let plain = std::env::temp_dir().join(format!(
        "lifeboat-restore-{}-{}.dump",
        std::process::id(),
        cx.attempt_key.replace('/', "_")
    ));
    fetch_from_s3(&s3c, key, &expected, opener, &plain).await?;
    Ok((plain, manifest, expected))
}

/// `<key>.sha256` in `sha256sum` format, as the legacy scripts wrote it.
async fn legacy_checksum(
    s3c: &crate::actions::s3::S3,
    key: &str,
) -> Result<Option<String>, ActionError> {
    let skey = format!("{key}.sha256");
    let Some(b) = crate::actions::s3::get_optional(s3c, &skey).await? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&b);
    let hex = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(Some(hex))
    } else {
        Err(ActionError::permanent(format!(
            "{skey} does not hold a SHA-256"
        )))
    }
}

async fn restore_file(
    w: &PostgresRestore,
    cx: &Exec<'_>,
    path: &std::path::Path,
    manifest: Option<serde_json::Value>,
    actual: String,
) -> Result<serde_json::Value, ActionError> {
    let target = PgTarget::from_exec(cx, &w.connection, w.database.as_deref())?;
    let db = target.database();
    let mut args = vec!["--exit-on-error".to_string()];
    if w.clean {
        args.push("--clean".into());
        args.push("--if-exists".into());
    }
    if let Some(Tpl::Value(j)) = &w.jobs {
        args.push(format!("--jobs={j}"));
    }
    if w.create {
        // Created here, under the target's name: pg_restore --create would use the name the
        // dump was taken from, which is not always the database meant.
        let mut admin = target.clone();
        admin.config.dbname("postgres");
        let client = admin.connect().await?;
        client
            .batch_execute(&format!("create database {}", ident(&db)))
            .await
            .map_err(|e| pg::classify(&e, &format!("creating database {db}")))?;
    }
    let mut magic = [0u8; 5];
    let custom = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"PGDMP";
    if custom {
        args.push(format!("--dbname={}", target.url_for(&db)));
        args.push(path.display().to_string());
        run_tool(&pg_tool("pg_restore"), &args, &target.tool_env()).await?;
    } else {
        // A plain SQL dump (`pg_dump | gzip` in the legacy scripts) is replayed by psql.
        let psql_args = vec![
            "--no-psqlrc".to_string(),
            "--quiet".into(),
            "--set=ON_ERROR_STOP=1".into(),
            "--single-transaction".into(),
            format!("--dbname={}", target.url_for(&db)),
            format!("--file={}", path.display()),
        ];
        run_tool(&pg_tool("psql"), &psql_args, &target.tool_env()).await?;
    }
    let mut counts = serde_json::Map::new();
    if !w.count_tables.is_empty() {
        let client = target.connect().await?;
        for t in &w.count_tables {
            let name = t.split('.').map(ident).collect::<Vec<_>>().join(".");
            let n: i64 = client
                .query_one(&format!("select count(*) from {name}"), &[])
                .await
                .map_err(|e| pg::classify(&e, &format!("counting rows of {t}")))?
                .get(0);
            counts.insert(t.clone(), n.into());
        }
    }
    Ok(serde_json::json!({
        "sha256": actual,
        "counts": counts,
        "consistent_at": manifest.as_ref().and_then(|m| m.get("consistent_at")).cloned().unwrap_or(serde_json::Value::Null),
        "database": db,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_the_restore() {
        let d = describe::<PostgresRestore>(json!({
            "connection": "db", "database": "orders", "clean": true, "jobs": 2,
            "from": {"path": "/b/orders.dump"}, "count_tables": ["orders"]
        }));
        assert_eq!(
            d,
            "verify the checksum of file /b/orders.dump, then pg_restore it into orders on <db> \
             (drop existing objects first, 2 jobs); then count rows of orders"
        );
    }

    #[test]
    fn jobs_may_be_templated_but_not_zero() {
        let r = parse::<PostgresRestore>(
            json!({"connection": "db", "from": {"path": "x"}, "jobs": "{{ params.jobs }}"}),
        );
        assert_eq!(r.jobs, Some(Tpl::Template("{{ params.jobs }}".into())));
        let r =
            parse::<PostgresRestore>(json!({"connection": "db", "from": {"path": "x"}, "jobs": 0}));
        assert_eq!(r.check()[0].field, "/jobs");
        assert!(
            reject::<PostgresRestore>(
                json!({"connection": "db", "from": {"path": "x"}, "jobs": "two"})
            )
            .starts_with("/jobs")
        );
    }
}
