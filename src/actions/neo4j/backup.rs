//! `neo4j.backup`: a logical export over Bolt, or neo4j-admin's offline dump, streamed to S3.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Neo4jTarget, column};
use crate::actions::backup::BackupLocation;
use crate::actions::postgres::backup::Encryption;
use crate::actions::s3::S3;
use crate::actions::support::neo4j_values as value;
use crate::actions::support::pipeline::{self, Sealed};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When,
    WithProblem, out,
};

/// The `format` of a logical export's manifest, and the first line of its stream.
pub const FORMAT: &str = "lifeboat neo4j export 1";
/// The `format` of a dump's manifest.
pub const DUMP_FORMAT: &str = "neo4j-admin dump";

/// How the backup is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupMethod {
    /// Online, over Bolt: every node, relationship, property (all types), index and constraint,
    /// as JSON lines. Neo4j reads are read-committed: stop writers first for a consistent copy.
    #[default]
    Logical,
    /// Offline: `neo4j-admin database dump` of a stopped database, where lifeboat runs beside
    /// its files. Restored with `neo4j.restore` `method: load`.
    Dump,
}

/// Back up a Neo4j database to S3: compressed with zstd, optionally encrypted with age,
/// checksummed, with a manifest beside it (counts per label and relationship type, the server's
/// version, when the export began).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Neo4jBackup {
    /// A `neo4j` connection (for `method: logical`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    #[serde(default)]
    pub method: BackupMethod,
    pub to: BackupLocation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<Encryption>,
    /// zstd level, 1-19 (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 19))]
    pub compression_level: Option<u8>,
    /// The S3 storage class of the object written; the bucket's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// `method: dump`: the database to dump (default `neo4j`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// `method: dump`: the neo4j-admin command line (default `["neo4j-admin"]`); lifeboat adds
    /// `database dump <database> --to-stdout`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_command: Vec<String>,
}

impl ActionSpec for Neo4jBackup {
    const NAME: &'static str = "neo4j.backup";
    const SUMMARY: &'static str = "Back up a Neo4j database to S3: a logical export over Bolt, or an offline neo4j-admin dump (zstd, optional age, SHA-256, manifest)";
    const OUTPUTS: &'static [Output] = &[
        out("key", "the object key"),
        out("size", "bytes stored"),
        out("plain_size", "bytes before compression and encryption"),
        out("sha256", "SHA-256 of the stored object"),
        out("nodes", "nodes exported (logical)"),
        out("relationships", "relationships exported (logical)"),
        out("labels", "nodes per label (logical)"),
        out("types", "relationships per type (logical)"),
        out("server_version", "the Neo4j server's version (logical)"),
        out(
            "consistent_at",
            "when the export's transaction began (RFC 3339); read-committed, see docs/neo4j.md",
        ),
        out("manifest", "the manifest's key"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;
    const STORED_BYTES: Option<&'static str> = Some("size");

    fn unsupported(&self) -> Option<String> {
        self.to.s3_only(Self::NAME, "to", "writes to")
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            match self.method {
                BackupMethod::Logical => logical(self, cx).await,
                BackupMethod::Dump => dump(self, cx).await,
            }
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        let mut c = super::graph_connection(self.connection.as_deref());
        c.extend(self.to.connections("/to/connection"));
        c
    }

    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.to.check("/to");
        p.extend(Encryption::problem(self.encrypt.as_ref()));
        match self.method {
            BackupMethod::Logical => {
                if self.connection.is_none() {
                    p.push(WithProblem::new(
                        "",
                        "a logical backup reads over Bolt: give the `neo4j` `connection`",
                    ));
                }
                if self.database.is_some() || !self.admin_command.is_empty() {
                    p.push(WithProblem::new(
                        "/method",
                        "`database` and `admin_command` are for `method: dump`; a logical backup reads the connection's database",
                    ));
                }
            }
            BackupMethod::Dump => {}
        }
        p
    }

    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let enc = Encryption::words(self.encrypt.as_ref());
        match self.method {
            BackupMethod::Logical => format!(
                "export every node, relationship, index and constraint of {} over Bolt to {} (JSON lines, zstd{enc}); read-committed: writes during the export may be half in it, so stop writers first",
                self.connection
                    .as_deref()
                    .map(|c| cx.connection(c))
                    .unwrap_or_default(),
                self.to.describe(cx)
            ),
            BackupMethod::Dump => format!(
                "{} database dump {} --to-stdout (offline: the database must be stopped) to {} (zstd{enc})",
                self.admin().join(" "),
                self.database.as_deref().unwrap_or("neo4j"),
                self.to.describe(cx)
            ),
        }
    }
}

impl Neo4jBackup {
    fn admin(&self) -> Vec<String> {
        super::admin(&self.admin_command)
    }

    fn level(&self) -> i32 {
        i32::from(self.compression_level.unwrap_or(3))
    }

    fn seal(&self) -> Result<pipeline::Seal, ActionError> {
        match &self.encrypt {
            Some(e) => e.seal(),
            None => Ok(pipeline::Seal::None),
        }
    }

    /// Writes the manifest beside the backup and returns the outputs.
    async fn record(
        &self,
        s3c: &S3,
        key: &str,
        seal: &pipeline::Seal,
        sealed: &Sealed,
        manifest: Value,
        outputs: Value,
    ) -> Result<Value, ActionError> {
        let written = crate::actions::backup::Written {
            s3: s3c,
            key,
            level: self.level(),
            seal,
            sealed,
            storage_class: self.storage_class.as_deref(),
        };
        crate::actions::backup::record(written, manifest, outputs).await
    }

    async fn destination(&self, cx: &Exec<'_>) -> Result<(S3, String), ActionError> {
        let (Some(conn), Some(key)) = (&self.to.connection, &self.to.key) else {
            return Err(ActionError::permanent("`to` needs `connection` and `key`"));
        };
        Ok((S3::from_exec(cx, conn).await?, key.clone()))
    }
}

/// What the export counted on the way.
#[derive(Default)]
struct Counted {
    nodes: u64,
    relationships: u64,
    labels: BTreeMap<String, u64>,
    types: BTreeMap<String, u64>,
}

/// Rows are read this many at a time (Bolt's PULL size).
const FETCH: usize = 5000;
/// JSON lines are handed to the compressing side in batches of about this many bytes.
const BATCH: usize = 256 * 1024;

async fn logical(w: &Neo4jBackup, cx: &Exec<'_>) -> Result<Value, ActionError> {
    let conn = w
        .connection
        .as_deref()
        .ok_or_else(|| ActionError::permanent("a logical backup needs `connection`"))?;
    let target = Neo4jTarget::from_exec(cx, conn)?;
    let (s3c, key) = w.destination(cx).await?;
    let db = target.connect(FETCH).await?;
    let began = jiff::Timestamp::now();
    let mut txn = db
        .graph
        .start_txn()
        .await
        .map_err(|e| target.classify(&e, "starting the export"))?;
    let schema = schema_of(&target, &mut txn).await?;
    let head = json!({
        "format": FORMAT,
        "server_version": db.version,
        "edition": db.edition,
        "database": target.database,
        "consistent_at": began.to_string(),
        "schema": schema,
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, String>>(4);
    let rows = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let export = async {
        let r = export_rows(&target, &mut txn, &tx).await;
        if let Err(e) = &r {
            let _ = tx.send(Err(e.message.clone())).await;
        }
        drop(tx);
        r
    };
    let mut first = serde_json::to_vec(&head).expect("json");
    first.push(b'\n');
    let seal = w.seal()?;
    let upload = pipeline::rows_to_s3(
        rows,
        String::from_utf8(first).expect("json is UTF-8"),
        "",
        &s3c,
        &key,
        w.level(),
        seal.clone(),
        w.storage_class.as_deref(),
    );
    let (exported, uploaded) = tokio::join!(export, upload);
    let _ = txn.rollback().await;
    let counted = match (exported, uploaded) {
        (Ok(c), Ok(sealed)) => (c, sealed),
        (Err(e), Ok(_)) => {
            // The stream was cut short by the failure: the object must not pass for a backup.
            let _ = crate::actions::s3::delete_keys(
                &s3c,
                std::slice::from_ref(&key),
                "removing a failed export",
            )
            .await;
            return Err(e);
        }
        (Err(e), Err(_)) | (Ok(_), Err(e)) => return Err(e),
    };
    let (c, sealed) = counted;
    let manifest = json!({
        "format": FORMAT,
        "server_version": db.version,
        "edition": db.edition,
        "database": target.database,
        "consistent_at": began.to_string(),
        "consistency": "read-committed",
        "nodes": c.nodes,
        "relationships": c.relationships,
        "labels": c.labels,
        "types": c.types,
        "schema": head["schema"],
    });
    let outputs = json!({
        "nodes": c.nodes,
        "relationships": c.relationships,
        "labels": c.labels,
        "types": c.types,
        "server_version": db.version,
        "consistent_at": began.to_string(),
    });
    w.record(&s3c, &key, &seal, &sealed, manifest, outputs)
        .await
}

/// The indexes and constraints, as the statements that make them again. Indexes a constraint
/// owns come with the constraint; the token lookup indexes every database has are kept too
/// (restore skips them when an equivalent one exists).
async fn schema_of(target: &Neo4jTarget, txn: &mut neo4rs::Txn) -> Result<Value, ActionError> {
    let mut out = Vec::new();
    for (kind, q) in [
        (
            "constraint",
            "SHOW CONSTRAINTS YIELD name, type, createStatement RETURN name, type, createStatement ORDER BY name",
        ),
        (
            "index",
            "SHOW INDEXES YIELD name, type, owningConstraint, createStatement WHERE owningConstraint IS NULL RETURN name, type, createStatement ORDER BY name",
        ),
    ] {
        for row in super::rows_of(target, txn, neo4rs::query(q), "reading the schema").await? {
            let text = |c: &str| -> Result<String, ActionError> {
                row.get::<String>(c)
                    .map_err(|e| ActionError::permanent(format!("reading the schema: {c}: {e}")))
            };
            out.push(json!({
                "kind": kind,
                "name": text("name")?,
                "type": text("type")?,
                "create": text("createStatement")?,
            }));
        }
    }
    Ok(Value::Array(out))
}

/// Streams every node, then every relationship, as JSON lines into `tx`, and a last line that
/// says how many: a restore that does not find it knows the stream was cut.
async fn export_rows(
    target: &Neo4jTarget,
    txn: &mut neo4rs::Txn,
    tx: &tokio::sync::mpsc::Sender<Result<bytes::Bytes, String>>,
) -> Result<Counted, ActionError> {
    let mut c = Counted::default();
    let mut buf = Vec::with_capacity(BATCH + 4096);
    let send = |buf: &mut Vec<u8>| {
        let full = std::mem::replace(buf, Vec::with_capacity(BATCH + 4096));
        tx.send(Ok(bytes::Bytes::from(full)))
    };
    let stopped = || ActionError::transient("the upload stopped");
    let doing = "exporting nodes";
    let mut nodes = txn
        .execute(neo4rs::query(
            "MATCH (n) RETURN id(n) AS i, labels(n) AS l, properties(n) AS p",
        ))
        .await
        .map_err(|e| target.classify(&e, doing))?;
    while let Some(row) = nodes
        .next(txn.handle())
        .await
        .map_err(|e| target.classify(&e, doing))?
    {
        let id: i64 = row
            .get("i")
            .map_err(|e| ActionError::permanent(format!("{doing}: {e}")))?;
        let labels: Vec<String> = row
            .get("l")
            .map_err(|e| ActionError::permanent(format!("{doing}: {e}")))?;
        let props = props_of(&row, id)?;
        for l in &labels {
            *c.labels.entry(l.clone()).or_default() += 1;
        }
        c.nodes += 1;
        serde_json::to_writer(&mut buf, &json!({"n": id, "l": labels, "p": props})).expect("json");
        buf.push(b'\n');
        if buf.len() >= BATCH {
            send(&mut buf).await.map_err(|_| stopped())?;
        }
    }
    let doing = "exporting relationships";
    let mut rels = txn
        .execute(neo4rs::query(
            "MATCH (a)-[r]->(b) RETURN id(r) AS i, id(a) AS s, id(b) AS e, type(r) AS t, properties(r) AS p",
        ))
        .await
        .map_err(|e| target.classify(&e, doing))?;
    while let Some(row) = rels
        .next(txn.handle())
        .await
        .map_err(|e| target.classify(&e, doing))?
    {
        let get = |k: &str| -> Result<i64, ActionError> {
            row.get(k)
                .map_err(|e| ActionError::permanent(format!("{doing}: {e}")))
        };
        let (id, s, e) = (get("i")?, get("s")?, get("e")?);
        let t: String = row
            .get("t")
            .map_err(|e| ActionError::permanent(format!("{doing}: {e}")))?;
        let props = props_of(&row, id)?;
        *c.types.entry(t.clone()).or_default() += 1;
        c.relationships += 1;
        serde_json::to_writer(
            &mut buf,
            &json!({"r": id, "s": s, "e": e, "t": t, "p": props}),
        )
        .expect("json");
        buf.push(b'\n');
        if buf.len() >= BATCH {
            send(&mut buf).await.map_err(|_| stopped())?;
        }
    }
    serde_json::to_writer(
        &mut buf,
        &json!({"end": {"nodes": c.nodes, "relationships": c.relationships}}),
    )
    .expect("json");
    buf.push(b'\n');
    send(&mut buf).await.map_err(|_| stopped())?;
    Ok(c)
}

fn props_of(row: &neo4rs::Row, id: i64) -> Result<Value, ActionError> {
    match column(row, "p")? {
        neo4rs::BoltType::Map(m) => value::tagged_map(&m)
            .map_err(|e| ActionError::permanent(format!("exporting element {id}: {e}"))),
        other => Err(ActionError::permanent(format!(
            "exporting element {id}: properties came as {other:?}"
        ))),
    }
}

/// `neo4j-admin database dump <db> --to-stdout` → zstd → age → S3.
async fn dump(w: &Neo4jBackup, cx: &Exec<'_>) -> Result<Value, ActionError> {
    let (s3c, key) = w.destination(cx).await?;
    let admin = w.admin();
    let database = w.database.clone().unwrap_or_else(|| "neo4j".into());
    let mut cmd = crate::actions::support::process::command(&admin[0]);
    cmd.args(&admin[1..])
        .args(["database", "dump", &database, "--to-stdout"]);
    let began = jiff::Timestamp::now();
    let seal = w.seal()?;
    let sealed = pipeline::dump_to_s3(
        cmd,
        &s3c,
        &key,
        w.level(),
        seal.clone(),
        w.storage_class.as_deref(),
    )
    .await?;
    let manifest = json!({
        "format": DUMP_FORMAT,
        "database": database,
        "consistent_at": began.to_string(),
        "consistency": "offline",
    });
    let outputs = json!({"consistent_at": began.to_string()});
    w.record(&s3c, &key, &seal, &sealed, manifest, outputs)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;

    #[test]
    fn the_plan_says_read_committed_and_offline() {
        let d = describe::<Neo4jBackup>(json!({
            "connection": "graph", "to": {"connection": "b", "key": "neo4j/1"},
            "encrypt": {"recipients": ["age1x"]}
        }));
        assert!(d.contains("read-committed"), "{d}");
        assert!(d.contains("encrypted to 1 age recipient(s)"), "{d}");
        let d = describe::<Neo4jBackup>(json!({
            "method": "dump", "to": {"connection": "b", "key": "neo4j/1.dump"},
            "admin_command": ["/opt/neo4j/bin/neo4j-admin"]
        }));
        assert_eq!(
            d,
            "/opt/neo4j/bin/neo4j-admin database dump neo4j --to-stdout (offline: the database must be stopped) to object neo4j/1.dump in <b> (zstd)"
        );
    }

    #[test]
    fn a_logical_backup_needs_its_connection_and_no_dump_fields() {
        let b = parse::<Neo4jBackup>(json!({"to": {"connection": "b", "key": "k"}}));
        assert_eq!(b.check()[0].field, "");
        let b = parse::<Neo4jBackup>(json!({
            "connection": "g", "to": {"connection": "b", "key": "k"}, "database": "x"
        }));
        assert_eq!(b.check()[0].field, "/method");
        let b =
            parse::<Neo4jBackup>(json!({"method": "dump", "to": {"connection": "b", "key": "k"}}));
        assert!(b.check().is_empty());
    }
}
