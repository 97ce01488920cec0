//! `postgres.backup`: pg_dump a database to a file or an object.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as pg, PgTarget};
use crate::actions::backup::BackupLocation;
use crate::actions::support::process::{pg_tool, run_tool, sha256_file};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, Tpl, When,
    WithProblem, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Encrypt the backup with age: to `recipients` (public keys), or with a `passphrase`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Usually `{{ secrets.NAME }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
}

/// Dump a database with pg_dump (custom format), compressed with zstd, optionally encrypted, to a
/// local file or an S3 object with a manifest beside it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresBackup {
    pub connection: String,
    /// The database to dump; the connection's database when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub to: BackupLocation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<Encryption>,
    /// zstd level, 1-19 (default 1: on typical table data it is both faster and no bigger than 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 19))]
    pub compression_level: Option<u8>,
    /// Parallel jobs for pg_dump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Tpl<u32>>,
}

impl ActionSpec for PostgresBackup {
    const NAME: &'static str = "postgres.backup";
    const SUMMARY: &'static str =
        "Dump a database (pg_dump custom format, zstd, optional age) to a file or S3";
    const OUTPUTS: &'static [Output] = &[
        out("path", "the local file, when `to.path` was given"),
        out("key", "the object key, when `to.key` was given"),
        out("size", "bytes written"),
        out("sha256", "SHA-256 of the bytes written"),
        out("server_version", "the PostgreSQL server version"),
        out("lsn", "WAL position the dump is consistent with"),
        out(
            "consistent_at",
            "time the dump is consistent with (RFC 3339), for RPO",
        ),
        out("database", "the database dumped"),
        out(
            "manifest",
            "the manifest written beside the backup (`<path>.manifest.json`)",
        ),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn unsupported(&self) -> Option<String> {
        if self.jobs.is_some() {
            return Some(
                "`jobs` needs pg_dump's directory format, which cannot be streamed; leave it out"
                    .into(),
            );
        }
        if self.to.path.is_some() && (self.encrypt.is_some() || self.compression_level.is_some()) {
            return Some("`encrypt` and `compression_level` apply to backups streamed to S3 (`to: {connection, key}`); a local file is pg_dump's own custom format".into());
        }
        None
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(backup(self, cx))
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        let mut c = the_connection(&self.connection, &[ConnectionKind::Postgres]);
        c.extend(self.to.connections("/to/connection"));
        c
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.to.check("/to");
        if let Some(e) = &self.encrypt
            && e.recipients.is_empty() == e.passphrase.is_none()
        {
            p.push(WithProblem::new(
                "/encrypt",
                "give `recipients` or a `passphrase`, exactly one",
            ));
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let db = self
            .database
            .as_deref()
            .unwrap_or("the connection's database");
        let enc = match &self.encrypt {
            Some(e) if !e.recipients.is_empty() => {
                format!(", encrypted to {} age recipient(s)", e.recipients.len())
            }
            Some(_) => ", encrypted with a passphrase".into(),
            None => String::new(),
        };
        format!(
            "pg_dump {db} on {} to {} (zstd{enc})",
            cx.connection(&self.connection),
            self.to.describe(cx)
        )
    }
}

/// The manifest beside a backup: what restore checks before it touches anything.
pub fn manifest_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".manifest.json");
    p.into()
}

async fn backup(w: &PostgresBackup, cx: &Exec<'_>) -> Result<serde_json::Value, ActionError> {
    let target = PgTarget::from_exec(cx, &w.connection, w.database.as_deref())?;
    let db = target.database();
    let mut client = target.connect().await?;
    let q = |e: tokio_postgres::Error| pg::classify(&e, "preparing the dump");
    let version: String = client
        .query_one("show server_version", &[])
        .await
        .map_err(q)?
        .get(0);
    // An exported snapshot pins what pg_dump sees, so its LSN and time are exactly the dump's.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(q)?;
    let row = tx
        .query_one(
            "select pg_export_snapshot(), \
                    case when pg_is_in_recovery() then pg_last_wal_replay_lsn() else pg_current_wal_lsn() end::text, \
                    case when pg_is_in_recovery() then coalesce(pg_last_xact_replay_timestamp(), now()) else now() end",
            &[],
        )
        .await
        .map_err(q)?;
    let snapshot: String = row.get(0);
    let lsn: String = row.get(1);
    let at: jiff::Timestamp = row.get(2);
    if let (Some(conn), Some(key)) = (&w.to.connection, &w.to.key) {
        let out = to_s3(
            w, &target, &db, conn, key, cx, &snapshot, &version, &lsn, at,
        )
        .await;
        let _ = tx.commit().await;
        return out;
    }
    let path = std::path::PathBuf::from(
        w.to.path
            .as_deref()
            .ok_or_else(|| ActionError::permanent("`to.path` is required"))?,
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| ActionError::permanent(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".partial-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let args = vec![
        "--format=custom".to_string(),
        format!("--snapshot={snapshot}"),
        format!("--file={}", tmp.display()),
        format!("--dbname={}", target.url_for(&db)),
    ];
    let dumped = run_tool(&pg_tool("pg_dump"), &args, &target.tool_env()).await;
    let _ = tx.commit().await;
    if let Err(e) = dumped {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Durable under its final name, or not there at all.
    let io = |e: std::io::Error| ActionError::permanent(format!("writing {}: {e}", path.display()));
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    let (digest, size) = sha256_file(&path).map_err(io)?;
    let sha256 = crate::runlog::hex(&digest);
    let manifest = serde_json::json!({
        "format": "pg_dump custom",
        "database": db,
        "server_version": version,
        "lsn": lsn,
        "consistent_at": at.to_string(),
        "size": size,
        "sha256": sha256,
        "lifeboat": env!("CARGO_PKG_VERSION"),
    });
    let mpath = manifest_path(&path);
    std::fs::write(
        &mpath,
        serde_json::to_string_pretty(&manifest).expect("json"),
    )
    .map_err(io)?;
    std::fs::File::open(&mpath)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(serde_json::json!({
        "path": path.display().to_string(),
        "size": size,
        "sha256": sha256,
        "server_version": version,
        "lsn": lsn,
        "consistent_at": at.to_string(),
        "database": db,
        "manifest": mpath.display().to_string(),
    }))
}

/// The streaming path: pg_dump → zstd → age → SHA-256 → multipart upload, then the manifest.
#[allow(clippy::too_many_arguments)]
async fn to_s3(
    w: &PostgresBackup,
    target: &PgTarget,
    db: &str,
    conn: &str,
    key: &str,
    cx: &Exec<'_>,
    snapshot: &str,
    version: &str,
    lsn: &str,
    at: jiff::Timestamp,
) -> Result<serde_json::Value, ActionError> {
    use crate::actions::support::pipeline::{Seal, dump_to_s3};
    let s3c = crate::actions::s3::S3::from_exec(cx, conn).await?;
    let seal = match &w.encrypt {
        None => Seal::None,
        Some(e) if !e.recipients.is_empty() => Seal::Recipients(
            e.recipients
                .iter()
                .map(|r| {
                    r.parse::<age::x25519::Recipient>().map_err(|why| {
                        ActionError::permanent(format!("`{r}` is not an age recipient: {why}"))
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        Some(e) => Seal::Passphrase(e.passphrase.clone().unwrap_or_default()),
    };
    let level = w.compression_level.map_or(1, i32::from);
    let mut cmd = crate::actions::support::process::command(pg_tool("pg_dump"));
    cmd.args([
        "--format=custom",
        "--compress=0",
        &format!("--snapshot={snapshot}"),
        &format!("--dbname={}", target.url_for(db)),
    ]);
    for (k, v) in target.tool_env() {
        cmd.env(k, v);
    }
    let sealed = dump_to_s3(cmd, &s3c, key, level, seal.clone()).await?;
    let manifest = serde_json::json!({
        "format": "pg_dump custom",
        "compression": format!("zstd:{level}"),
        "encryption": seal.name(),
        "database": db,
        "server_version": version,
        "lsn": lsn,
        "consistent_at": at.to_string(),
        "plain_size": sealed.plain_size,
        "size": sealed.size,
        "sha256": sealed.sha256,
        "lifeboat": env!("CARGO_PKG_VERSION"),
        "verified": false,
    });
    let mkey = crate::actions::s3::manifest_key(key);
    crate::actions::s3::put_json(&s3c, &mkey, &manifest).await?;
    Ok(serde_json::json!({
        "key": key,
        "size": sealed.size,
        "sha256": sealed.sha256,
        "server_version": version,
        "lsn": lsn,
        "consistent_at": at.to_string(),
        "database": db,
        "manifest": mkey,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_target_and_encryption() {
        let d = describe::<PostgresBackup>(json!({
            "connection": "db", "database": "orders",
            "to": {"connection": "b", "key": "pg/orders.dump"},
            "encrypt": {"recipients": ["age1xyz"]}
        }));
        assert_eq!(
            d,
            "pg_dump orders on <db> to object pg/orders.dump in <b> (zstd, encrypted to 1 age recipient(s))"
        );
    }

    #[test]
    fn location_must_be_whole() {
        let b = parse::<PostgresBackup>(json!({"connection": "db", "to": {"connection": "b"}}));
        assert_eq!(
            b.check(),
            vec![WithProblem::new("/to", "`connection` needs a `key`")]
        );
        let b = parse::<PostgresBackup>(
            json!({"connection": "db", "to": {"path": "/x"}, "encrypt": {}}),
        );
        assert_eq!(b.check()[0].field, "/encrypt");
    }
}
