//! `postgres.restore`: load a backup into a scratch database beside the target and swap it in
//! once verified (`mode: swap`), or drop the target and load it again (`mode: in_place`).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as pg, PgTarget, ident};
use crate::actions::backup::BackupLocation;
use crate::actions::s3::S3;
use crate::actions::support::backup_parts::{self as parts, Part, Role};
use crate::actions::support::pg_swap as swap;
use crate::actions::support::pipeline::{Opener, Sink, open_from_s3};
use crate::actions::support::process::{command, pg_tool, run_tool, sha256_file};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Effect, Exec, Language,
    Output, Tpl, When, WithProblem, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// How the restored data takes the target's place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Load into a scratch database beside the target while the backup downloads, verify it, and
    /// only then swap it in, keeping the old database under another name. A failure at any
    /// point leaves the target untouched. Needs room for two copies.
    #[default]
    Swap,
    /// Drop the target and load the backup into it again, after a first full read that proves
    /// the backup whole. For hosts without room for two copies; not reversible: a failure while
    /// loading leaves the target incomplete.
    InPlace,
}

/// Restore a backup made by `postgres.backup` (in parts or in one stream, or a legacy gzip and
/// openssl dump). Every object's checksum and the manifest are verified before the target is
/// touched.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresRestore {
    pub connection: String,
    /// The target database; the connection's database when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub from: BackupLocation,
    #[serde(default)]
    pub mode: Mode,
    /// Streams loaded at once, and pg_restore's jobs for indexes and constraints (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Tpl<u32>>,
    /// age identity (private key) or passphrase to decrypt with, usually `{{ secrets.NAME }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrypt_with: Option<String>,
    /// The backup's expected SHA-256; when absent, the manifest beside the backup gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Tables whose row counts are reported as outputs (read before the swap).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub count_tables: Vec<String>,
    /// SQL run against the restored data before it takes the target's place; each must return
    /// one row whose first column is true (e.g. `select count(*) > 0 from orders`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify: Vec<String>,
    /// No longer used: `mode: swap` restores into a new database and `mode: in_place` drops and
    /// creates the target again. Refused, with that said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean: Option<bool>,
    /// No longer used: a missing target is created in either mode. Refused, with that said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<bool>,
}

impl ActionSpec for PostgresRestore {
    const NAME: &'static str = "postgres.restore";
    const SUMMARY: &'static str =
        "Restore a verified backup beside a database and swap it in (or in place)";
    const OUTPUTS: &'static [Output] = &[
        out("sha256", "SHA-256 of the backup, verified"),
        out("counts", "row counts of `count_tables`, by table"),
        out("verified", "each `verify` query with its result"),
        out(
            "consistent_at",
            "the time the restored data is consistent with, from the manifest",
        ),
        out("database", "the database restored into"),
        out("mode", "`swap` or `in_place`"),
        out(
            "kept_database",
            "swap: the name the old database is kept under (null when there was none)",
        ),
        out(
            "ended_sessions",
            "sessions of the target ended for the swap or the drop",
        ),
        out("streams", "objects loaded (parts of the backup)"),
        out(
            "disk",
            "the free-space check: free and needed bytes, or why it could not be made",
        ),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;
    const RESTORED_AS_OF: Option<&'static str> = Some("consistent_at");

    /// Another attempt drops what an interrupted one loaded into the scratch database (or, in
    /// place, the target) and loads it again; one killed after its swap committed finds the swap
    /// done (its note) and reports it.
    fn idempotent(&self) -> bool {
        true
    }
    fn effect(&self) -> Effect {
        match self.mode {
            Mode::Swap => Effect::Changes,
            Mode::InPlace => Effect::Irreversible,
        }
    }
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
    fn code(&self) -> Vec<(String, Language)> {
        (0..self.verify.len())
            .map(|i| (format!("/verify/{i}"), Language::Sql))
            .collect()
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.from.check("/from");
        if let Some(Tpl::Value(0)) = self.jobs {
            p.push(WithProblem::new("/jobs", "`jobs` must be at least 1"));
        }
        if self.clean.is_some() {
            p.push(WithProblem::new(
                "/clean",
                "`clean` is no longer used: `mode: swap` (the default) restores into a new database and swaps it in; `mode: in_place` drops the target and creates it again",
            ));
        }
        if self.create.is_some() {
            p.push(WithProblem::new(
                "/create",
                "`create` is no longer used: a target that does not exist is created in either mode",
            ));
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let db = self
            .database
            .as_deref()
            .unwrap_or("the connection's database");
        let on = cx.connection(&self.connection);
        let from = self.from.describe(cx);
        let jobs = match &self.jobs {
            Some(j) => j.to_string(),
            None => "2".into(),
        };
        let how = if self.from.path.is_some() {
            format!("(pg_restore with {jobs} jobs), after verifying its checksum")
        } else {
            format!("while it downloads ({jobs} streams at a time), verifying every checksum")
        };
        let kept = match &self.database {
            Some(d) => format!("{d}__before_<id>"),
            None => "<database>__before_<id>".into(),
        };
        let mut checks = Vec::new();
        if !self.count_tables.is_empty() {
            checks.push(format!("count rows of {}", self.count_tables.join(", ")));
        }
        if !self.verify.is_empty() {
            checks.push(format!(
                "run {} verification quer{}",
                self.verify.len(),
                if self.verify.len() == 1 { "y" } else { "ies" }
            ));
        }
        let checks = if checks.is_empty() {
            String::new()
        } else {
            format!("; {}", checks.join(", "))
        };
        match self.mode {
            Mode::Swap => format!(
                "load {from} into a scratch database beside {db} on {on} {how}{checks}; then swap it in (end {db}'s sessions, keep the old one as {kept}, carry over grants, settings and comment). Until the swap, {db} is untouched"
            ),
            Mode::InPlace => format!(
                "read all of {from} to verify it, then DROP {db} on {on} and load it again ({jobs} streams at a time){checks}. Not reversible: a failure while loading leaves {db} incomplete"
            ),
        }
    }
}

/// Where the backup is and what it is, checked as far as it can be without reading it.
enum Source {
    /// A local file, its checksum verified already; pg_restore reads it with `jobs`.
    File { path: std::path::PathBuf },
    /// One object: a backup before parts, or the legacy scripts'.
    Object {
        s3: S3,
        key: String,
        sha256: String,
        opener: Arc<Opener>,
    },
    Parts {
        s3: S3,
        parts: Vec<Part>,
        opener: Arc<Opener>,
    },
}

impl Source {
    fn streams(&self) -> usize {
        match self {
            Source::Parts { parts, .. } => parts.len(),
            _ => 1,
        }
    }
}

pub(crate) async fn restore(
    w: &PostgresRestore,
    cx: &Exec<'_>,
) -> Result<serde_json::Value, ActionError> {
    let target = PgTarget::from_exec(cx, &w.connection, w.database.as_deref())?;
    let db = target.database();
    let (source, manifest, sha256) = resolve(w, cx).await?;
    let jobs = match &w.jobs {
        Some(Tpl::Value(j)) => (*j).max(1) as usize,
        _ => 2,
    };
    let admin = swap::admin_for(&target, &db);
    let client = admin.connect().await?;
    let shape = swap::shape(&client, &db).await?;
    let disk = disk_check(&client, &target, &db, manifest.as_ref(), w.mode).await?;
    let mut out = serde_json::json!({
        "sha256": sha256,
        "consistent_at": manifest.as_ref().and_then(|m| m.get("consistent_at")).cloned().unwrap_or(serde_json::Value::Null),
        "database": db,
        "mode": w.mode,
        "kept_database": null,
        "ended_sessions": 0,
        "streams": source.streams(),
        "disk": disk,
    });
    match w.mode {
        Mode::Swap => {
            let id = swap::run_step_id(cx.run_id, cx.step);
            let scratch = swap::derived_name(&db, "restoring", &id);
            let kept = swap::derived_name(&db, "before", &id);
            // An attempt that was killed after its swap committed (before its success was
            // recorded) is done: the database under the target's name is the one it loaded.
            if let Some(noted) = (cx.recall)("swap")
                && noted.get("scratch_oid").is_some()
                && noted.get("scratch_oid").and_then(|o| o.as_u64())
                    == swap::oid_of(&client, &db).await?.map(u64::from)
                && let Some(done) = noted.get("outputs")
            {
                return Ok(done.clone());
            }
            // A scratch database left by a killed attempt of this step is dropped first.
            swap::drop_if_exists(&client, &scratch).await?;
            if swap::oid_of(&client, &kept).await?.is_some() {
                return Err(ActionError::permanent(format!(
                    "the database {kept} exists already, and the swap would keep {db} under that name; nothing was changed (rename or drop it)"
                )));
            }
            swap::create_twin(&client, &scratch, shape.as_ref()).await?;
            (cx.progress)(&format!("loading into {scratch}"));
            let loaded = async {
                let mut into = target.clone();
                into.config.dbname(&scratch);
                load(&source, &into, jobs, cx).await?;
                checks(w, &into, &mut out).await
            }
            .await;
            if let Err(e) = loaded {
                let _ = swap::drop_if_exists(&client, &scratch).await;
                return Err(ActionError {
                    message: format!("{}; nothing was restored: {db} was not touched", e.message),
                    ..e
                });
            }
            let scratch_oid = swap::oid_of(&client, &scratch)
                .await?
                .ok_or_else(|| ActionError::permanent(format!("{scratch} vanished")))?;
            out["kept_database"] = if shape.is_some() {
                kept.clone().into()
            } else {
                serde_json::Value::Null
            };
            (cx.note)(
                "swap",
                serde_json::json!({"scratch_oid": scratch_oid, "outputs": out}),
            )
            .await?;
            (cx.progress)(&format!("swapping {scratch} in for {db}"));
            let swapped = match swap::swap_in(&admin, &db, Some(&scratch), &kept, true).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = swap::drop_if_exists(&client, &scratch).await;
                    return Err(e);
                }
            };
            out["ended_sessions"] = swapped.ended_sessions.into();
            Ok(out)
        }
        Mode::InPlace => {
            // Everything is read once before anything is dropped: a corrupt, cut or wrongly
            // keyed backup fails here.
            prove_whole(&source, cx).await?;
            let carried = match &shape {
                Some(s) => swap::carried_over(&client, s.oid, &db)
                    .await
                    .map_err(|e| pg::classify(&e, "reading the database's grants and settings"))?,
                None => Vec::new(),
            };
            let ended: i64 = client
                .query_one(
                    "select count(*) from pg_stat_activity where datname = $1 and pid <> pg_backend_pid()",
                    &[&db],
                )
                .await
                .map_err(|e| pg::classify(&e, "counting sessions"))?
                .get(0);
            (cx.progress)(&format!("dropping {db} and loading it again"));
            swap::drop_if_exists(&client, &db).await?;
            swap::create_twin(&client, &db, shape.as_ref()).await?;
            for s in &carried {
                client
                    .batch_execute(s)
                    .await
                    .map_err(|e| pg::classify(&e, "carrying over grants and settings"))?;
            }
            load(&source, &target, jobs, cx).await?;
            checks(w, &target, &mut out).await?;
            out["ended_sessions"] = ended.into();
            Ok(out)
        }
    }
}

/// The counts and verification queries, against the restored data.
async fn checks(
    w: &PostgresRestore,
    into: &PgTarget,
    out: &mut serde_json::Value,
) -> Result<(), ActionError> {
    if w.count_tables.is_empty() && w.verify.is_empty() {
        out["counts"] = serde_json::json!({});
        out["verified"] = serde_json::json!([]);
        return Ok(());
    }
    let client = into.connect().await?;
    let mut counts = serde_json::Map::new();
    for t in &w.count_tables {
        let name = t.split('.').map(ident).collect::<Vec<_>>().join(".");
        let n: i64 = client
            .query_one(&format!("select count(*) from {name}"), &[])
            .await
            .map_err(|e| pg::classify(&e, &format!("counting rows of {t}")))?
            .get(0);
        counts.insert(t.clone(), n.into());
    }
    out["counts"] = counts.into();
    let mut results = Vec::new();
    for sql in &w.verify {
        let row = client
            .query_opt(sql.as_str(), &[])
            .await
            .map_err(|e| pg::classify(&e, "running a verification query"))?
            .ok_or_else(|| ActionError::permanent(format!("`{sql}` returned no row")))?;
        let ok: bool = row.try_get(0).map_err(|_| {
            ActionError::permanent(format!("`{sql}`: the first column must be a boolean"))
        })?;
        if !ok {
            return Err(ActionError::permanent(format!(
                "verification failed: `{sql}` is false"
            )));
        }
        results.push(serde_json::json!({"sql": sql, "ok": ok}));
    }
    out["verified"] = results.into();
    Ok(())
}

/// The SHA-256 a backup must have: the one the step gives, else the one its manifest records.
fn expected_sha256(w: &PostgresRestore, manifest: Option<&serde_json::Value>) -> Option<String> {
    match &w.sha256 {
        Some(s) => Some(s.to_ascii_lowercase()),
        None => manifest?.get("sha256")?.as_str().map(String::from),
    }
}

/// Finds the backup and checks what can be checked without reading it: the manifest, the
/// parts it lists, the key fitting the encryption. A local file is read whole here (its
/// checksum), since pg_restore then reads it with `jobs`.
async fn resolve(
    w: &PostgresRestore,
    cx: &Exec<'_>,
) -> Result<(Source, Option<serde_json::Value>, String), ActionError> {
    let (Some(conn), Some(key)) = (&w.from.connection, &w.from.key) else {
        let path = std::path::PathBuf::from(
            w.from
                .path
                .as_deref()
                .ok_or_else(|| ActionError::permanent("`from.path` is required"))?,
        );
        let (digest, _) = sha256_file(&path).map_err(|e| {
            ActionError::permanent(format!("cannot read the backup {}: {e}", path.display()))
        })?;
        let actual = crate::runlog::hex(&digest);
        let manifest: Option<serde_json::Value> =
            std::fs::read(super::backup::manifest_path(&path))
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
        return Ok((Source::File { path }, manifest, actual));
    };
    let s3c = S3::from_exec(cx, conn).await?;
    let mkey = crate::actions::s3::manifest_key(key);
    let manifest = crate::actions::backup::read_manifest(&s3c, key).await?;
    let opener = Arc::new(opener(w.decrypt_with.as_ref(), manifest.as_ref())?);
    if let Some(m) = &manifest
        && let Some(parts) = parts::from_manifest(key, m).map_err(|e| {
            ActionError::permanent(format!(
                "s3://{}/{mkey}: {e}; nothing was restored",
                s3c.bucket
            ))
        })?
    {
        let digest = parts::digest(&parts);
        crate::actions::backup::expect_sha256(w.sha256.as_ref(), &digest)?;
        return Ok((
            Source::Parts {
                s3: s3c,
                parts,
                opener,
            },
            manifest,
            digest,
        ));
    }
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
    Ok((
        Source::Object {
            s3: s3c,
            key: key.clone(),
            sha256: expected.clone(),
            opener,
        },
        manifest,
        expected,
    ))
}

/// How to open the backup, from the manifest's word on its encryption and `decrypt_with`.
pub(crate) fn opener(
    decrypt_with: Option<&String>,
    manifest: Option<&serde_json::Value>,
) -> Result<Opener, ActionError> {
    let sealing = manifest
        .and_then(|m| m.get("encryption"))
        .and_then(|e| e.as_str());
    Ok(match (sealing, decrypt_with) {
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
    })
}

/// `<key>.sha256` in `sha256sum` format, as the legacy scripts wrote it.
pub(crate) async fn legacy_checksum(s3c: &S3, key: &str) -> Result<Option<String>, ActionError> {
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

/// Reads every object through its checksum, decryption and decompression, keeping nothing:
/// what `in_place` does before it drops anything.
async fn prove_whole(source: &Source, cx: &Exec<'_>) -> Result<(), ActionError> {
    let nothing_restored = |e: ActionError| ActionError {
        message: format!("{}; nothing was restored", e.message),
        ..e
    };
    match source {
        Source::File { .. } => Ok(()),
        Source::Object {
            s3,
            key,
            sha256,
            opener,
        } => open_from_s3(s3, key, sha256, opener.clone(), Sink::Nowhere)
            .await
            .map(drop)
            .map_err(nothing_restored),
        Source::Parts { s3, parts, opener } => {
            (cx.progress)(&format!("reading {} parts to verify them", parts.len()));
            for p in parts {
                open_from_s3(s3, &p.key, &p.sha256, opener.clone(), Sink::Nowhere)
                    .await
                    .map_err(nothing_restored)?;
            }
            Ok(())
        }
    }
}

/// pg_restore or psql into `into`, reading stdin.
fn loader(into: &PgTarget, archive: bool) -> std::process::Command {
    let (tool, args) = loader_args(into, archive);
    let mut cmd = command(tool);
    cmd.args(args);
    for (k, v) in into.tool_env() {
        cmd.env(k, v);
    }
    cmd
}

/// The tool that loads a pg_dump archive (pg_restore) or SQL (psql) into `into`, and the
/// arguments every load gives it: stop at the first error.
fn loader_args(into: &PgTarget, archive: bool) -> (std::path::PathBuf, Vec<String>) {
    let dbname = format!("--dbname={}", into.url_for(&into.database()));
    if archive {
        (
            pg_tool("pg_restore"),
            vec!["--exit-on-error".to_string(), dbname],
        )
    } else {
        (
            pg_tool("psql"),
            vec![
                "--no-psqlrc".to_string(),
                "--quiet".into(),
                "--set=ON_ERROR_STOP=1".into(),
                dbname,
            ],
        )
    }
}

/// Loads the backup into `into` (an empty database): the schema before the data, the data
/// streams `jobs` at a time as they download, then indexes and constraints with pg_restore's
/// `jobs`. Each stream's checksum is known at its end; a failure anywhere fails the whole load.
async fn load(
    source: &Source,
    into: &PgTarget,
    jobs: usize,
    cx: &Exec<'_>,
) -> Result<(), ActionError> {
    use futures_util::{StreamExt, TryStreamExt};
    let stream = |s3: &S3, key: String, sha: String, opener: Arc<Opener>| {
        let into = into.clone();
        let s3 = s3.clone();
        async move {
            let choose = Box::new(move |archive: bool| loader(&into, archive));
            open_from_s3(&s3, &key, &sha, opener, Sink::Process(choose)).await
        }
    };
    match source {
        Source::File { path } => {
            let mut magic = [0u8; 5];
            let archive = std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
                .is_ok()
                && &magic == b"PGDMP";
            let (tool, mut args) = loader_args(into, archive);
            if archive {
                args.extend([format!("--jobs={jobs}"), path.display().to_string()]);
            } else {
                args.extend([
                    "--single-transaction".to_string(),
                    format!("--file={}", path.display()),
                ]);
            }
            run_tool(&tool, &args, &into.tool_env()).await.map(drop)
        }
        Source::Object {
            s3,
            key,
            sha256,
            opener,
        } => stream(s3, key.clone(), sha256.clone(), opener.clone())
            .await
            .map(drop),
        Source::Parts { s3, parts, opener } => {
            let pre = &parts[0];
            stream(s3, pre.key.clone(), pre.sha256.clone(), opener.clone()).await?;
            let data: Vec<&Part> = parts.iter().filter(|p| p.role == Role::Data).collect();
            (cx.progress)(&format!(
                "loading {} data stream(s), {jobs} at a time",
                data.len()
            ));
            let mut streams = Vec::with_capacity(data.len());
            for p in &data {
                streams.push(stream(s3, p.key.clone(), p.sha256.clone(), opener.clone()));
            }
            let _: Vec<u64> = futures_util::stream::iter(streams)
                .buffer_unordered(jobs)
                .try_collect()
                .await?;
            // Indexes and constraints: pg_restore builds them `jobs` at a time, which it can only
            // do from a file. The archive holds definitions only (kilobytes), never data.
            let post = parts.last().expect("a whole backup ends with its schema");
            (cx.progress)("building indexes and constraints");
            let file = tempfile_path(cx, "post-data");
            let built = async {
                open_from_s3(
                    s3,
                    &post.key,
                    &post.sha256,
                    opener.clone(),
                    Sink::File(file.clone()),
                )
                .await?;
                let (tool, mut args) = loader_args(into, true);
                args.extend([format!("--jobs={jobs}"), file.display().to_string()]);
                run_tool(&tool, &args, &into.tool_env()).await
            }
            .await;
            let _ = std::fs::remove_file(&file);
            built.map(drop)
        }
    }
}

/// A private file name for this attempt in the temporary directory.
fn tempfile_path(cx: &Exec<'_>, what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "lifeboat-{}-{}-{what}",
        std::process::id(),
        cx.attempt_key.replace('/', "_")
    ))
}

/// Whether the server has room for the restore: where its data directory is on this host (the
/// server listens on loopback or a local socket and the directory is readable), free space
/// against the database's recorded size (or twice the dump's plain size when an older manifest
/// has no size). Where it cannot be checked, says why and goes on: the output records it.
async fn disk_check(
    client: &tokio_postgres::Client,
    target: &PgTarget,
    db: &str,
    manifest: Option<&serde_json::Value>,
    mode: Mode,
) -> Result<serde_json::Value, ActionError> {
    let need = manifest.and_then(|m| {
        m.get("database_size")
            .and_then(|v| v.as_u64())
            .or_else(|| m.get("plain_size").and_then(|v| v.as_u64()).map(|p| p * 2))
    });
    let Some(need) = need else {
        return Ok(serde_json::json!({"checked": false, "why": "the manifest records no size"}));
    };
    let local = target.config.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Unix(_) => true,
        tokio_postgres::config::Host::Tcp(h) => {
            h == "localhost"
                || h.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    });
    if !local {
        return Ok(
            serde_json::json!({"checked": false, "needed": need, "why": "the server is on another host"}),
        );
    }
    let dir: Option<String> = match client
        .query_opt(
            "select coalesce(nullif(pg_tablespace_location(t.oid), ''), current_setting('data_directory')) \
             from pg_database d join pg_tablespace t on t.oid = d.dattablespace where d.datname = current_database()",
            &[],
        )
        .await
    {
        Ok(r) => r.map(|r| r.get(0)),
        Err(_) => None,
    };
    let Some(dir) = dir else {
        return Ok(
            serde_json::json!({"checked": false, "needed": need, "why": "the data directory is not readable to this role (pg_read_all_settings)"}),
        );
    };
    let Some(free) = free_bytes(std::path::Path::new(&dir)) else {
        return Ok(
            serde_json::json!({"checked": false, "needed": need, "why": format!("{dir} is not on this host")}),
        );
    };
    // In place, the old copy's room comes back when it is dropped, before the load.
    let returned: u64 = match mode {
        Mode::Swap => 0,
        Mode::InPlace => client
            .query_opt(
                "select pg_database_size(oid) from pg_database where datname = $1",
                &[&db],
            )
            .await
            .ok()
            .flatten()
            .map_or(0, |r| r.get::<_, i64>(0).max(0) as u64),
    };
    let free = free + returned;
    if free < need {
        return Err(ActionError::permanent(format!(
            "the restore needs about {} MB and {dir} has {} MB free; nothing was changed (free space, or restore with mode: in_place, which does not keep the old copy)",
            need / 1_000_000,
            free / 1_000_000
        )));
    }
    Ok(serde_json::json!({"checked": true, "free": free, "needed": need, "directory": dir}))
}

/// Free bytes for an unprivileged user on the filesystem holding `path`.
#[allow(unsafe_code)]
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes only into the struct it is given, which lives for the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_the_swap_and_the_drop() {
        let d = describe::<PostgresRestore>(json!({
            "connection": "db", "database": "orders", "jobs": 4,
            "from": {"path": "/b/orders.dump"}, "count_tables": ["orders"],
            "verify": ["select count(*) > 0 from orders"]
        }));
        assert_eq!(
            d,
            "load file /b/orders.dump into a scratch database beside orders on <db> \
             (pg_restore with 4 jobs), after verifying its checksum; count rows of orders, run 1 verification query; \
             then swap it in (end orders's sessions, keep the old one as orders__before_<id>, carry over grants, \
             settings and comment). Until the swap, orders is untouched"
        );
        let d = describe::<PostgresRestore>(json!({
            "connection": "db", "database": "orders", "mode": "in_place",
            "from": {"connection": "b", "key": "k"}
        }));
        assert_eq!(
            d,
            "read all of object k in <b> to verify it, then DROP orders on <db> and load it again (2 streams at a time). \
             Not reversible: a failure while loading leaves orders incomplete"
        );
    }

    #[test]
    fn in_place_cannot_be_undone_and_swap_can() {
        let swap = parse::<PostgresRestore>(json!({"connection": "db", "from": {"path": "x"}}));
        assert_eq!(swap.mode, Mode::Swap);
        assert_eq!(swap.effect(), Effect::Changes);
        let in_place = parse::<PostgresRestore>(
            json!({"connection": "db", "from": {"path": "x"}, "mode": "in_place"}),
        );
        assert_eq!(in_place.effect(), Effect::Irreversible);
        assert!(in_place.destructive() && swap.destructive());
    }

    #[test]
    fn the_old_clean_and_create_are_refused_with_what_replaced_them() {
        let r = parse::<PostgresRestore>(
            json!({"connection": "db", "from": {"path": "x"}, "clean": true, "create": false}),
        );
        let p = r.check();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].field, "/clean");
        assert!(p[0].message.contains("mode: swap"), "{}", p[0].message);
        assert_eq!(p[1].field, "/create");
    }

    #[test]
    fn verify_queries_are_code() {
        let r = parse::<PostgresRestore>(
            json!({"connection": "db", "from": {"path": "x"}, "verify": ["select true", "select 1 = 1"]}),
        );
        assert_eq!(
            r.code(),
            vec![
                ("/verify/0".to_string(), Language::Sql),
                ("/verify/1".to_string(), Language::Sql)
            ]
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
