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

impl Encryption {
    /// What `encrypt` must be beyond its type: exactly one way of sealing.
    pub fn problem(e: Option<&Encryption>) -> Option<WithProblem> {
        e.filter(|e| e.recipients.is_empty() == e.passphrase.is_none())
            .map(|_| {
                WithProblem::new(
                    "/encrypt",
                    "give `recipients` or a `passphrase`, exactly one",
                )
            })
    }

    /// The plan's words for it, as a clause: `, encrypted to 2 age recipient(s)`.
    pub fn words(e: Option<&Encryption>) -> String {
        match e {
            Some(e) if !e.recipients.is_empty() => {
                format!(", encrypted to {} age recipient(s)", e.recipients.len())
            }
            Some(_) => ", encrypted with a passphrase".into(),
            None => String::new(),
        }
    }

    /// The seal this asks for; a recipient that is not an age public key is refused.
    pub fn seal(&self) -> Result<crate::actions::support::pipeline::Seal, ActionError> {
        use crate::actions::support::pipeline::Seal;
        if self.recipients.is_empty() {
            return Ok(Seal::Passphrase(
                self.passphrase.clone().unwrap_or_default(),
            ));
        }
        Ok(Seal::Recipients(
            self.recipients
                .iter()
                .map(|r| {
                    r.parse::<age::x25519::Recipient>().map_err(|why| {
                        ActionError::permanent(format!("`{r}` is not an age recipient: {why}"))
                    })
                })
                .collect::<Result<_, _>>()?,
        ))
    }
}

/// Dump a database with pg_dump to S3 in parts (the schema, a stream per big table and one for
/// the rest, all in one snapshot, each compressed with zstd, optionally encrypted, checksummed),
/// with a manifest listing them; or to a local file in pg_dump's custom format.
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
    /// The S3 storage class of the objects written (e.g. `STANDARD_IA`); the bucket's default
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Tables of more than this many MiB (default 256) are dumped in chunks of about this size,
    /// each a stream of its own, so that one big table is read and restored in parallel too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub chunk_mib: Option<u32>,
    /// Streams dumped and uploaded at once (default 2), all in one consistent snapshot: each
    /// table of 16 MiB or more is a stream of its own, so that a restore loads them at once too.
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
        out(
            "sha256",
            "SHA-256 of the file; in S3, of the parts' keys and SHA-256s (each part's is in the manifest)",
        ),
        out(
            "parts",
            "objects written to S3 (the backup's key and its `.partNNNN`s)",
        ),
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
    const STORED_BYTES: Option<&'static str> = Some("size");

    fn unsupported(&self) -> Option<String> {
        if self.to.path.is_some()
            && (self.encrypt.is_some()
                || self.compression_level.is_some()
                || self.jobs.is_some()
                || self.storage_class.is_some())
        {
            return Some("`encrypt`, `compression_level`, `jobs` and `storage_class` apply to backups streamed to S3 (`to: {connection, key}`); a local file is pg_dump's own custom format".into());
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
        p.extend(Encryption::problem(self.encrypt.as_ref()));
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let db = self
            .database
            .as_deref()
            .unwrap_or("the connection's database");
        let enc = Encryption::words(self.encrypt.as_ref());
        if self.to.path.is_some() {
            return format!(
                "pg_dump {db} on {} to {} (custom format)",
                cx.connection(&self.connection),
                self.to.describe(cx)
            );
        }
        let jobs = match &self.jobs {
            Some(j) => j.to_string(),
            None => DEFAULT_JOBS.to_string(),
        };
        format!(
            "pg_dump {db} on {} to {} in parts (schema, a stream per table of 16 MiB or more, the rest; {jobs} at a time, one snapshot; zstd{enc})",
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
            w, &target, &tx, &db, conn, key, cx, &snapshot, &version, &lsn, at,
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

/// Streams at once unless `jobs` says. Measured with scripts/bench-backup on two cores, three
/// were no faster than two beyond the noise (the `events` backup at 0.97x and 1.07x of the
/// floor, against 1.02x and 1.03x) and took 40% more memory (docs/s3-backups.md).
const DEFAULT_JOBS: usize = 2;

/// A table gets a stream of its own from this size on; smaller ones share one.
const OWN_STREAM: i64 = 16 * 1024 * 1024;
/// At most this many tables get their own stream (each is one pg_dump run and one object).
const MAX_STREAMS: usize = 64;

/// The streaming path, in parts: pg_dump runs (at most `jobs` at once, all in the one exported
/// snapshot) → zstd → age → SHA-256 → multipart upload, one object per part; then the manifest
/// listing them. A failure aborts the uploads in flight and deletes the parts already written,
/// so no half backup is left beside a manifest-less key.
#[allow(clippy::too_many_arguments)]
async fn to_s3(
    w: &PostgresBackup,
    target: &PgTarget,
    tx: &tokio_postgres::Transaction<'_>,
    db: &str,
    conn: &str,
    key: &str,
    cx: &Exec<'_>,
    snapshot: &str,
    version: &str,
    lsn: &str,
    at: jiff::Timestamp,
) -> Result<serde_json::Value, ActionError> {
    use crate::actions::support::backup_parts::{self as parts, Part, Role};
    use crate::actions::support::pipeline::{Seal, dump_to_s3};
    use futures_util::{StreamExt, TryStreamExt};
    let s3c = crate::actions::s3::S3::from_exec(cx, conn).await?;
    let seal = match &w.encrypt {
        None => Seal::None,
        Some(e) => e.seal()?,
    };
    let level = w.compression_level.map_or(1, i32::from);
    let jobs = match &w.jobs {
        Some(Tpl::Value(j)) => (*j).max(1) as usize,
        _ => DEFAULT_JOBS,
    };
    let q = |e: tokio_postgres::Error| pg::classify(&e, "listing the tables");
    let chunk = i64::from(w.chunk_mib.unwrap_or(256).max(1)) * 1024 * 1024;
    // In the dump's own snapshot: the tables as pg_dump will see them, each as a pg_dump pattern
    // that matches it alone and as SQL (in double quotes every character is itself; a quote is
    // doubled), with its size, its pages and its columns as COPY lists them (no generated or
    // dropped ones). Extension members and temporary tables are left to pg_dump's own rules
    // (the shared stream).
    let big: Vec<(String, i64, i64, String)> = tx
        .query(
            "select '\"' || replace(n.nspname, '\"', '\"\"') || '\".\"' || replace(c.relname, '\"', '\"\"') || '\"', \
                    pg_table_size(c.oid), pg_relation_size(c.oid) / current_setting('block_size')::bigint, \
                    coalesce((select string_agg(quote_ident(a.attname), ', ' order by a.attnum) from pg_attribute a \
                              where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''), '') \
             from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind = 'r' and c.relpersistence <> 't' \
               and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_(toast|temp)' \
               and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e') \
               and pg_table_size(c.oid) >= $1 \
             order by 2 desc, 1 limit $2",
            &[&OWN_STREAM, &(MAX_STREAMS as i64)],
        )
        .await
        .map_err(q)?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let db_size: i64 = tx
        .query_one("select pg_database_size(current_database())", &[])
        .await
        .map_err(q)?
        .get(0);
    let base = |cmd: &mut std::process::Command| {
        cmd.args([
            &format!("--snapshot={snapshot}"),
            &format!("--dbname={}", target.url_for(db)),
        ]);
        for (k, v) in target.tool_env() {
            cmd.env(k, v);
        }
    };
    // What each stream is: big tables first, so the longest streams start first.
    enum Stream {
        Tool(std::process::Command),
        Chunk {
            table: String,
            columns: String,
            pages: parts::Pages,
        },
    }
    let mut plan: Vec<(Role, Option<String>, Option<parts::Pages>, Stream)> = Vec::new();
    let mut pre = crate::actions::support::process::command(pg_tool("pg_dump"));
    pre.args(["--format=custom", "--compress=0", "--section=pre-data"]);
    base(&mut pre);
    plan.push((Role::PreData, None, None, Stream::Tool(pre)));
    let mut chunked = 0;
    for (table, size, pages, columns) in &big {
        let n = (size + chunk - 1) / chunk;
        if n >= 2 && !columns.is_empty() {
            chunked += 1;
            for range in parts::split(*pages, n) {
                plan.push((
                    Role::Data,
                    Some(table.clone()),
                    Some(range),
                    Stream::Chunk {
                        table: table.clone(),
                        columns: columns.clone(),
                        pages: range,
                    },
                ));
            }
            continue;
        }
        let mut c = crate::actions::support::process::command(pg_tool("pg_dump"));
        c.args([
            "--format=plain",
            "--section=data",
            "--strict-names",
            &format!("--table={table}"),
        ]);
        base(&mut c);
        plan.push((Role::Data, Some(table.clone()), None, Stream::Tool(c)));
    }
    let mut rest = crate::actions::support::process::command(pg_tool("pg_dump"));
    rest.args(["--format=plain", "--section=data"]);
    for (table, ..) in &big {
        rest.arg(format!("--exclude-table-data={table}"));
    }
    base(&mut rest);
    plan.push((Role::Data, None, None, Stream::Tool(rest)));
    let mut post = crate::actions::support::process::command(pg_tool("pg_dump"));
    post.args(["--format=custom", "--compress=0", "--section=post-data"]);
    base(&mut post);
    plan.push((Role::PostData, None, None, Stream::Tool(post)));

    let total = plan.len();
    (cx.progress)(&format!(
        "dumping {db} in {total} streams ({} table(s) on their own, {chunked} of them in chunks), {jobs} at a time",
        big.len()
    ));
    let keys: Vec<String> = (0..total).map(|i| parts::object_key(key, i)).collect();
    let mut streams = Vec::with_capacity(total);
    for ((role, table, pages, stream), k) in plan.into_iter().zip(keys.iter().cloned()) {
        let (s3c, seal, class) = (&s3c, seal.clone(), w.storage_class.as_deref());
        streams.push(async move {
            let sealed = match stream {
                Stream::Tool(cmd) => dump_to_s3(cmd, s3c, &k, level, seal, class).await?,
                Stream::Chunk {
                    table,
                    columns,
                    pages,
                } => {
                    let copy = ChunkCopy {
                        target,
                        db,
                        snapshot,
                        table: &table,
                        columns: &columns,
                        pages,
                    };
                    copy.to_s3(s3c, &k, level, seal, class).await?
                }
            };
            Ok::<_, ActionError>(Part {
                key: k,
                role,
                table,
                pages,
                size: sealed.size,
                plain_size: sealed.plain_size,
                sha256: sealed.sha256,
            })
        });
    }
    let done: Result<Vec<Part>, ActionError> = futures_util::stream::iter(streams)
        .buffered(jobs)
        .try_collect()
        .await;
    let list = match done {
        Ok(list) => list,
        Err(e) => {
            // The parts that were completed before the failure go too: without a manifest they
            // are nobody's backup.
            let _ =
                crate::actions::s3::delete_keys(&s3c, &keys, "removing a failed backup's parts")
                    .await;
            return Err(e);
        }
    };
    let sha256 = parts::digest(&list);
    let size: u64 = list.iter().map(|p| p.size).sum();
    let plain_size: u64 = list.iter().map(|p| p.plain_size).sum();
    let manifest = serde_json::json!({
        "format": parts::FORMAT,
        "compression": format!("zstd:{level}"),
        "encryption": seal.name(),
        "database": db,
        "server_version": version,
        "lsn": lsn,
        "consistent_at": at.to_string(),
        "database_size": db_size,
        "plain_size": plain_size,
        "size": size,
        "sha256": sha256,
        "parts": list,
        "storage_class": w.storage_class,
        "lifeboat": env!("CARGO_PKG_VERSION"),
        "verified": false,
    });
    let mkey = crate::actions::s3::manifest_key(key);
    crate::actions::s3::put_json(&s3c, &mkey, &manifest).await?;
    Ok(serde_json::json!({
        "key": key,
        "size": size,
        "sha256": sha256,
        "parts": total,
        "server_version": version,
        "lsn": lsn,
        "consistent_at": at.to_string(),
        "database": db,
        "manifest": mkey,
    }))
}

/// A chunk of a big table's rows, read in the dump's snapshot by a session of its own.
struct ChunkCopy<'a> {
    target: &'a PgTarget,
    db: &'a str,
    snapshot: &'a str,
    /// As SQL: `"schema"."table"`.
    table: &'a str,
    columns: &'a str,
    pages: crate::actions::support::backup_parts::Pages,
}

impl ChunkCopy<'_> {
    /// `COPY (SELECT … WHERE ctid in the range) TO STDOUT`, as a psql script (what pg_dump would
    /// write for the table, cut by pages), sealed and uploaded. Row security off, as pg_dump
    /// has it: a policy that would hide rows makes the COPY fail rather than leave them out.
    async fn to_s3(
        &self,
        s3c: &crate::actions::s3::S3,
        key: &str,
        level: i32,
        seal: crate::actions::support::pipeline::Seal,
        class: Option<&str>,
    ) -> Result<crate::actions::support::pipeline::Sealed, ActionError> {
        let mut t = self.target.clone();
        t.config.dbname(self.db);
        let client = t.connect().await?;
        let q = |e: tokio_postgres::Error| pg::classify(&e, &format!("reading {}", self.table));
        client
            .batch_execute(&format!(
                "set row_security = off; set statement_timeout = 0;                  begin isolation level repeatable read read only; set transaction snapshot {}",
                super::literal(self.snapshot)
            ))
            .await
            .map_err(q)?;
        let first = self.pages.first;
        let filter = match self.pages.end {
            Some(end) => format!("ctid >= '({first},0)'::tid and ctid < '({end},0)'::tid"),
            None => format!("ctid >= '({first},0)'::tid"),
        };
        let rows = client
            .copy_out(&format!(
                "copy (select {} from only {} where {filter}) to stdout",
                self.columns, self.table
            ))
            .await
            .map_err(q)?;
        let head = format!(
            "SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\nCOPY {} ({}) FROM stdin;\n",
            self.table, self.columns
        );
        let sealed = crate::actions::support::pipeline::rows_to_s3(
            rows, head, "\\.\n", s3c, key, level, seal, class,
        )
        .await;
        let _ = client.batch_execute("commit").await;
        sealed
    }
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
            "pg_dump orders on <db> to object pg/orders.dump in <b> in parts (schema, a stream per table of 16 MiB or more, the rest; 2 at a time, one snapshot; zstd, encrypted to 1 age recipient(s))"
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
