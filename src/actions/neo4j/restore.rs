//! `neo4j.restore`: a logical export loaded over Bolt into an empty database, or a dump loaded
//! with neo4j-admin.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Neo4jTarget;
use super::backup::{DUMP_FORMAT, FORMAT};
use crate::actions::backup::BackupLocation;
use crate::actions::s3::S3;
use crate::actions::support::neo4j_values as value;
use crate::actions::support::pipeline::{Opener, Sink, open_from_s3};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When,
    WithProblem, out,
};
use crate::runbook::DurationText;

/// How the backup is loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestoreMethod {
    /// A `neo4j.backup` logical export, over Bolt, into an empty database.
    #[default]
    Logical,
    /// A dump (`neo4j.backup` `method: dump`, or the legacy scripts' `neo4j_*.dump.gz.enc`)
    /// with `neo4j-admin database load`, where lifeboat runs beside the database files; the
    /// database must be stopped.
    Load,
}

/// Restore a Neo4j backup. Verify before touch: the whole backup is downloaded, checked
/// against its SHA-256, decrypted and decompressed before anything is written. A logical
/// restore then loads into an empty database in batches that are idempotent (a retry or
/// `resume` never duplicates a node), checks the counts against the manifest, and only then
/// makes the indexes and constraints again and waits for them to be online. A failed load
/// removes what it loaded.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Neo4jRestore {
    /// A `neo4j` connection (for `method: logical`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    #[serde(default)]
    pub method: RestoreMethod,
    pub from: BackupLocation,
    /// age identity (private key) or passphrase to decrypt with, usually `{{ secrets.NAME }}`;
    /// for the legacy scripts' backups, their openssl passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrypt_with: Option<String>,
    /// The backup's expected SHA-256; when absent, the manifest (or the legacy `.sha256`)
    /// beside the backup gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Nodes or relationships per transaction (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub batch_size: Option<u32>,
    /// How long to wait for the indexes to come online (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_wait: Option<DurationText>,
    /// `method: load`: the database to load into (default `neo4j`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// `method: load`: the neo4j-admin command line (default `["neo4j-admin"]`); lifeboat adds
    /// `database load <database> --from-stdin --overwrite-destination=true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_command: Vec<String>,
}

impl ActionSpec for Neo4jRestore {
    const NAME: &'static str = "neo4j.restore";
    const SUMMARY: &'static str = "Restore a Neo4j backup: a logical export into an empty database (idempotent batches, counts checked, indexes awaited), or a dump with neo4j-admin load";
    const OUTPUTS: &'static [Output] = &[
        out("key", "the backup's object key"),
        out("sha256", "the backup's SHA-256, as verified"),
        out("nodes", "nodes in the database after the restore (logical)"),
        out(
            "relationships",
            "relationships in the database after the restore (logical)",
        ),
        out("labels", "nodes per label (logical)"),
        out("types", "relationships per type (logical)"),
        out(
            "schema",
            "indexes and constraints made again, all online (logical)",
        ),
        out(
            "consistent_at",
            "when the backup was taken, from its manifest (for RPO)",
        ),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;
    const RESTORED_AS_OF: Option<&'static str> = Some("consistent_at");

    fn unsupported(&self) -> Option<String> {
        self.from.path.as_ref().map(|_| {
            "`neo4j.restore` reads from S3 (`from: {connection, key}`); a local file is not supported"
                .into()
        })
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            match self.method {
                RestoreMethod::Logical => logical(self, cx).await,
                RestoreMethod::Load => load(self, cx).await,
            }
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        let mut c = super::graph_connection(self.connection.as_deref());
        c.extend(self.from.connections("/from/connection"));
        c
    }

    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.from.check("/from");
        p.extend(WithProblem::duration(
            "/index_wait",
            self.index_wait.as_ref(),
        ));
        match self.method {
            RestoreMethod::Logical => {
                if self.connection.is_none() {
                    p.push(WithProblem::new(
                        "",
                        "a logical restore loads over Bolt: give the `neo4j` `connection`",
                    ));
                }
                if self.database.is_some() || !self.admin_command.is_empty() {
                    p.push(WithProblem::new(
                        "/method",
                        "`database` and `admin_command` are for `method: load`; a logical restore loads into the connection's database",
                    ));
                }
            }
            RestoreMethod::Load => {
                if self.batch_size.is_some() || self.index_wait.is_some() {
                    p.push(WithProblem::new(
                        "/method",
                        "`batch_size` and `index_wait` are for `method: logical`",
                    ));
                }
            }
        }
        p
    }

    fn describe(&self, cx: &dyn DescribeContext) -> String {
        match self.method {
            RestoreMethod::Logical => format!(
                "verify {} (SHA-256, decryption, counts in its manifest), then load it into {} which must be empty, in idempotent batches of {}; check the counts, make the indexes and constraints again and wait for them",
                self.from.describe(cx),
                self.connection
                    .as_deref()
                    .map(|c| cx.connection(c))
                    .unwrap_or_default(),
                self.batch_size.unwrap_or(DEFAULT_BATCH)
            ),
            RestoreMethod::Load => format!(
                "verify {}, then {} database load {} --from-stdin --overwrite-destination=true (offline: the database must be stopped; replaces it)",
                self.from.describe(cx),
                self.admin().join(" "),
                self.database.as_deref().unwrap_or("neo4j"),
            ),
        }
    }
}

const DEFAULT_BATCH: u32 = 10_000;

/// What marks a node this restore loaded until the load is checked: a label with a unique id
/// (the export's), so a batch sent again merges with what it already made.
const MARK: &str = "__LifeboatRestore";
const MARK_ID: &str = "__lifeboat_id";
const MARK_CONSTRAINT: &str = "lifeboat_restore_id";

impl Neo4jRestore {
    fn admin(&self) -> Vec<String> {
        super::admin(&self.admin_command)
    }

    /// The backup, verified whole before anything is touched: its manifest, and one pass
    /// through checksum, decryption and decompression.
    async fn verified(
        &self,
        cx: &Exec<'_>,
    ) -> Result<(S3, String, String, Option<Value>, Arc<Opener>), ActionError> {
        let (Some(conn), Some(key)) = (&self.from.connection, &self.from.key) else {
            return Err(ActionError::permanent(
                "`from` needs `connection` and `key`",
            ));
        };
        let s3c = S3::from_exec(cx, conn).await?;
        let stored = crate::actions::backup::stored(&s3c, key).await?;
        let Some(object) = stored.objects.first().filter(|_| stored.objects.len() == 1) else {
            return Err(ActionError::permanent(format!(
                "s3://{}/{key} is a backup in parts (PostgreSQL's): not a Neo4j backup; nothing was restored",
                s3c.bucket
            )));
        };
        if let Some(want) = &self.sha256
            && !want.eq_ignore_ascii_case(&object.sha256)
        {
            return Err(ActionError::permanent(format!(
                "the backup's SHA-256 is {}, expected {want}: not the backup meant; nothing was restored",
                object.sha256
            )));
        }
        let format = stored
            .manifest
            .as_ref()
            .and_then(|m| m.get("format"))
            .and_then(Value::as_str);
        let fits = match self.method {
            RestoreMethod::Logical => format == Some(FORMAT),
            // The legacy scripts' dumps have no manifest, only their `.sha256`.
            RestoreMethod::Load => format == Some(DUMP_FORMAT) || stored.manifest.is_none(),
        };
        if !fits {
            let hint = match format {
                Some(FORMAT) => "; it is a logical export: use `method: logical`",
                Some(DUMP_FORMAT) => "; it is a neo4j-admin dump: use `method: load`",
                _ => "",
            };
            return Err(ActionError::permanent(format!(
                "s3://{}/{key} is a `{}` backup, not what `method: {}` loads{hint}; nothing was restored",
                s3c.bucket,
                format.unwrap_or("unknown"),
                match self.method {
                    RestoreMethod::Logical => "logical",
                    RestoreMethod::Load => "load",
                }
            )));
        }
        let opener = Arc::new(crate::actions::postgres::restore::opener(
            self.decrypt_with.as_ref(),
            stored.manifest.as_ref(),
        )?);
        open_from_s3(&s3c, key, &object.sha256, opener.clone(), Sink::Nowhere)
            .await
            .map_err(|e| ActionError::permanent(format!("{}; nothing was restored", e.message)))?;
        Ok((
            s3c,
            key.clone(),
            object.sha256.clone(),
            stored.manifest,
            opener,
        ))
    }
}

/// A count query's one number.
async fn count(
    target: &Neo4jTarget,
    graph: &neo4rs::Graph,
    cypher: &str,
) -> Result<i64, ActionError> {
    let doing = "counting";
    let mut rows = graph
        .execute(neo4rs::query(cypher))
        .await
        .map_err(|e| target.classify(&e, doing))?;
    let row = rows
        .next()
        .await
        .map_err(|e| target.classify(&e, doing))?
        .ok_or_else(|| ActionError::permanent(format!("{doing}: no row from {cypher}")))?;
    row.get::<i64>("n")
        .map_err(|e| ActionError::permanent(format!("{doing}: {e}")))
}

/// `name → count` rows of a query returning `k` and `n`.
async fn counts(
    target: &Neo4jTarget,
    graph: &neo4rs::Graph,
    cypher: &str,
) -> Result<BTreeMap<String, u64>, ActionError> {
    let doing = "counting";
    let mut rows = graph
        .execute(neo4rs::query(cypher))
        .await
        .map_err(|e| target.classify(&e, doing))?;
    let mut out = BTreeMap::new();
    while let Some(row) = rows.next().await.map_err(|e| target.classify(&e, doing))? {
        let k: String = row
            .get("k")
            .map_err(|e| ActionError::permanent(format!("{doing}: {e}")))?;
        let n: i64 = row
            .get("n")
            .map_err(|e| ActionError::permanent(format!("{doing}: {e}")))?;
        out.insert(k, n as u64);
    }
    Ok(out)
}

async fn run(
    target: &Neo4jTarget,
    graph: &neo4rs::Graph,
    cypher: &str,
    doing: &str,
) -> Result<(), ActionError> {
    graph
        .run(neo4rs::query(cypher))
        .await
        .map(|_| ())
        .map_err(|e| target.classify(&e, doing))
}

/// Removes what this restore loaded and has not yet unmarked.
async fn remove_loaded(target: &Neo4jTarget, graph: &neo4rs::Graph) -> Result<(), ActionError> {
    run(
        target,
        graph,
        &format!("MATCH (n:{MARK}) CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS OF 10000 ROWS"),
        "removing a failed restore's nodes",
    )
    .await?;
    run(
        target,
        graph,
        &format!("DROP CONSTRAINT {MARK_CONSTRAINT} IF EXISTS"),
        "removing a failed restore's constraint",
    )
    .await
}

fn manifest_counts(m: &Value, field: &str) -> BTreeMap<String, u64> {
    m.get(field)
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

async fn logical(w: &Neo4jRestore, cx: &Exec<'_>) -> Result<Value, ActionError> {
    let conn = w
        .connection
        .as_deref()
        .ok_or_else(|| ActionError::permanent("a logical restore needs `connection`"))?;
    let target = Neo4jTarget::from_exec(cx, conn)?;
    let (s3c, key, sha, manifest, opener) = w.verified(cx).await?;
    let manifest = manifest.unwrap_or_default();
    let db = target.connect(1000).await?;
    let graph = db.graph.clone();
    // A resumed restore that had loaded everything carries on from there: by then its nodes
    // may be unmarked, and the database no longer looks empty.
    let loaded_before = (cx.recall)("loaded").is_some();
    if !loaded_before {
        let all = count(&target, &graph, "MATCH (n) RETURN count(n) AS n").await?;
        let mine = count(
            &target,
            &graph,
            &format!("MATCH (n:{MARK}) RETURN count(n) AS n"),
        )
        .await?;
        if all > mine {
            return Err(ActionError::permanent(format!(
                "the database on {} holds {} node(s): a logical restore loads into an empty database, so nothing is mixed with what is there; empty it first (e.g. a `neo4j.query` step with `writes: true`: MATCH (n) CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS); nothing was restored",
                target.uri,
                all - mine
            )));
        }
        run(
            &target,
            &graph,
            &format!(
                "CREATE CONSTRAINT {MARK_CONSTRAINT} IF NOT EXISTS FOR (n:{MARK}) REQUIRE n.{MARK_ID} IS UNIQUE"
            ),
            "preparing the load",
        )
        .await?;
        let batch = w.batch_size.unwrap_or(DEFAULT_BATCH) as usize;
        let loader_target = target.clone();
        let loader_graph = graph.clone();
        let handle = tokio::runtime::Handle::current();
        let loaded = open_from_s3(
            &s3c,
            &key,
            &sha,
            opener,
            Sink::Reader(Box::new(move |r| {
                load_lines(r, &handle, &loader_target, &loader_graph, batch)
            })),
        )
        .await;
        let checked = match loaded {
            Ok(_) => check_marked(&target, &graph, &manifest).await,
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            let cleaned = remove_loaded(&target, &graph).await;
            let tail = match cleaned {
                Ok(()) => "what was loaded is removed".to_string(),
                Err(c) => format!(
                    "removing what was loaded failed too ({}): its nodes carry the label {MARK}",
                    c.message
                ),
            };
            return Err(ActionError {
                message: format!("{}; {tail}", e.message),
                transient: e.transient,
            });
        }
        (cx.note)("loaded", json!(true)).await?;
    }
    // Unmarking and the schema are idempotent: a resumed attempt runs them again.
    run(
        &target,
        &graph,
        &format!(
            "MATCH ()-[x]->() WHERE x.{MARK_ID} IS NOT NULL CALL (x) {{ REMOVE x.{MARK_ID} }} IN TRANSACTIONS OF 10000 ROWS"
        ),
        "unmarking the relationships",
    )
    .await?;
    run(
        &target,
        &graph,
        &format!(
            "MATCH (n:{MARK}) CALL (n) {{ REMOVE n:{MARK} REMOVE n.{MARK_ID} }} IN TRANSACTIONS OF 10000 ROWS"
        ),
        "unmarking the nodes",
    )
    .await?;
    run(
        &target,
        &graph,
        &format!("DROP CONSTRAINT {MARK_CONSTRAINT} IF EXISTS"),
        "dropping the load's constraint",
    )
    .await?;
    let schema = manifest
        .get("schema")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut made = Vec::new();
    for s in &schema {
        let (Some(name), Some(create)) = (
            s.get("name").and_then(Value::as_str),
            s.get("create").and_then(Value::as_str),
        ) else {
            continue;
        };
        let statement = if_not_exists(name, create);
        run(
            &target,
            &graph,
            &statement,
            &format!("making `{name}` again"),
        )
        .await?;
        made.push(name.to_string());
    }
    let wait = crate::actions::support::duration_or(
        w.index_wait.as_ref(),
        std::time::Duration::from_secs(600),
    )?;
    run(
        &target,
        &graph,
        &format!("CALL db.awaitIndexes({})", wait.as_secs().max(1)),
        "waiting for the indexes",
    )
    .await?;
    let failed = counts(
        &target,
        &graph,
        "SHOW INDEXES YIELD name, state WHERE state <> 'ONLINE' RETURN name AS k, 0 AS n",
    )
    .await?;
    if !failed.is_empty() {
        return Err(ActionError::permanent(format!(
            "indexes not online after the wait: {}",
            failed.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let nodes = count(&target, &graph, "MATCH (n) RETURN count(n) AS n").await?;
    let rels = count(&target, &graph, "MATCH ()-[r]->() RETURN count(r) AS n").await?;
    let labels = counts(
        &target,
        &graph,
        "CALL db.labels() YIELD label CALL (label) { MATCH (n:$(label)) RETURN count(n) AS c } RETURN label AS k, c AS n",
    )
    .await?;
    let types = counts(
        &target,
        &graph,
        "CALL db.relationshipTypes() YIELD relationshipType AS t CALL (t) { MATCH ()-[r:$(t)]->() RETURN count(r) AS c } RETURN t AS k, c AS n",
    )
    .await?;
    Ok(json!({
        "key": key,
        "sha256": sha,
        "nodes": nodes,
        "relationships": rels,
        "labels": labels.into_iter().filter(|(_, n)| *n > 0).collect::<BTreeMap<_, _>>(),
        "types": types.into_iter().filter(|(_, n)| *n > 0).collect::<BTreeMap<_, _>>(),
        "schema": made,
        "consistent_at": manifest.get("consistent_at").cloned().unwrap_or(Value::Null),
    }))
}

/// The export's `CREATE … `name` FOR …` made idempotent; an equivalent index or constraint
/// (a token lookup index every database has) is then left as it is.
fn if_not_exists(name: &str, create: &str) -> String {
    let quoted = super::ident(name);
    let at = format!("{quoted} FOR ");
    match create.find(&at) {
        Some(i) => format!(
            "{}{quoted} IF NOT EXISTS FOR {}",
            &create[..i],
            &create[i + at.len()..]
        ),
        None => create.to_string(),
    }
}

/// The loaded nodes and relationships, still marked, against the manifest's counts.
async fn check_marked(
    target: &Neo4jTarget,
    graph: &neo4rs::Graph,
    manifest: &Value,
) -> Result<(), ActionError> {
    let labels = counts(
        target,
        graph,
        &format!(
            "MATCH (n:{MARK}) UNWIND labels(n) AS k WITH k WHERE k <> '{MARK}' RETURN k, count(*) AS n"
        ),
    )
    .await?;
    let nodes = count(
        target,
        graph,
        &format!("MATCH (n:{MARK}) RETURN count(n) AS n"),
    )
    .await?;
    let types = counts(
        target,
        graph,
        &format!(
            "MATCH ()-[x]->() WHERE x.{MARK_ID} IS NOT NULL RETURN type(x) AS k, count(*) AS n"
        ),
    )
    .await?;
    let want_nodes = manifest.get("nodes").and_then(Value::as_u64).unwrap_or(0);
    let want_rels = manifest
        .get("relationships")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let rels: u64 = types.values().sum();
    let want_labels = manifest_counts(manifest, "labels");
    let want_types = manifest_counts(manifest, "types");
    let mut wrong = Vec::new();
    if nodes as u64 != want_nodes {
        wrong.push(format!("{nodes} nodes, the manifest says {want_nodes}"));
    }
    if rels != want_rels {
        wrong.push(format!(
            "{rels} relationships, the manifest says {want_rels}"
        ));
    }
    for (what, got, want) in [
        ("label", &labels, &want_labels),
        ("type", &types, &want_types),
    ] {
        for k in got.keys().chain(want.keys()) {
            let (g, w) = (
                got.get(k).copied().unwrap_or(0),
                want.get(k).copied().unwrap_or(0),
            );
            if g != w && !wrong.iter().any(|x| x.contains(&format!("`{k}`"))) {
                wrong.push(format!("{what} `{k}`: {g}, the manifest says {w}"));
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(ActionError::permanent(format!(
            "the restored graph does not match the backup's manifest: {}",
            wrong.join("; ")
        )))
    }
}

/// Reads the export's lines and sends them in batches (on the blocking side: `handle` runs the
/// async calls). Nodes are merged on their export id, relationships on theirs: a batch sent
/// twice makes nothing twice.
fn load_lines(
    r: &mut dyn std::io::Read,
    handle: &tokio::runtime::Handle,
    target: &Neo4jTarget,
    graph: &neo4rs::Graph,
    batch: usize,
) -> Result<(), String> {
    let node_q =
        format!("UNWIND $rows AS r MERGE (n:{MARK} {{{MARK_ID}: r.i}}) SET n += r.p SET n:$(r.l)");
    let rel_q = format!(
        "UNWIND $rows AS r MATCH (a:{MARK} {{{MARK_ID}: r.s}}) MATCH (b:{MARK} {{{MARK_ID}: r.e}}) MERGE (a)-[x:$(r.t) {{{MARK_ID}: r.i}}]->(b) SET x += r.p"
    );
    let send = |q: &str, rows: &mut Vec<neo4rs::BoltType>| -> Result<(), String> {
        let list = neo4rs::BoltType::List(std::mem::take(rows).into());
        handle
            .block_on(graph.run(neo4rs::query(q).param("rows", list)))
            .map(|_| ())
            .map_err(|e| target.classify(&e, "loading").message)
    };
    let mut lines = std::io::BufReader::with_capacity(256 * 1024, r).lines();
    let head = lines
        .next()
        .ok_or("the export is empty")?
        .map_err(|e| e.to_string())?;
    let head: Value = serde_json::from_str(&head).map_err(|e| format!("line 1: {e}"))?;
    if head.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(format!("line 1 does not begin a `{FORMAT}` stream"));
    }
    let (mut nodes, mut rels) = (Vec::new(), Vec::new());
    let (mut n_nodes, mut n_rels) = (0u64, 0u64);
    let mut ended = None;
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        let at = i + 2;
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("line {at}: {e}"))?;
        let o = v
            .as_object()
            .ok_or_else(|| format!("line {at}: not an object"))?;
        let props = |o: &serde_json::Map<String, Value>| -> Result<neo4rs::BoltType, String> {
            value::untag(o.get("p").unwrap_or(&Value::Null)).map_err(|e| format!("line {at}: {e}"))
        };
        let field = |k: &str| {
            o.get(k)
                .cloned()
                .ok_or_else(|| format!("line {at}: no `{k}`"))
        };
        if let Some(id) = o.get("n") {
            let mut m = neo4rs::BoltMap::new();
            m.put("i".into(), value::untag(id)?);
            m.put("l".into(), value::untag(&field("l")?)?);
            m.put("p".into(), props(o)?);
            nodes.push(neo4rs::BoltType::Map(m));
            n_nodes += 1;
            if nodes.len() >= batch {
                send(&node_q, &mut nodes)?;
            }
        } else if let Some(id) = o.get("r") {
            if !nodes.is_empty() {
                send(&node_q, &mut nodes)?;
            }
            let mut m = neo4rs::BoltMap::new();
            m.put("i".into(), value::untag(id)?);
            m.put("s".into(), value::untag(&field("s")?)?);
            m.put("e".into(), value::untag(&field("e")?)?);
            m.put("t".into(), value::untag(&field("t")?)?);
            m.put("p".into(), props(o)?);
            rels.push(neo4rs::BoltType::Map(m));
            n_rels += 1;
            if rels.len() >= batch {
                send(&rel_q, &mut rels)?;
            }
        } else if let Some(end) = o.get("end") {
            ended = Some(end.clone());
        } else {
            return Err(format!(
                "line {at}: neither a node, a relationship nor the end"
            ));
        }
    }
    if !nodes.is_empty() {
        send(&node_q, &mut nodes)?;
    }
    if !rels.is_empty() {
        send(&rel_q, &mut rels)?;
    }
    let end = ended.ok_or("the export stops before its last line: it was cut short")?;
    if end != json!({"nodes": n_nodes, "relationships": n_rels}) {
        return Err(format!(
            "the export's last line counts {end}, its lines hold {n_nodes} nodes and {n_rels} relationships"
        ));
    }
    Ok(())
}

/// Verified, then `neo4j-admin database load --from-stdin`, fed as it downloads.
async fn load(w: &Neo4jRestore, cx: &Exec<'_>) -> Result<Value, ActionError> {
    let (s3c, key, sha, manifest, opener) = w.verified(cx).await?;
    let admin = w.admin();
    let database = w.database.clone().unwrap_or_else(|| "neo4j".into());
    let choose = Box::new(move |_pg_dump: bool| {
        let mut cmd = crate::actions::support::process::command(&admin[0]);
        cmd.args(&admin[1..]).args([
            "database",
            "load",
            &database,
            "--from-stdin",
            "--overwrite-destination=true",
        ]);
        cmd
    });
    open_from_s3(&s3c, &key, &sha, opener, Sink::Process(choose)).await?;
    Ok(json!({
        "key": key,
        "sha256": sha,
        "consistent_at": manifest
            .as_ref()
            .and_then(|m| m.get("consistent_at"))
            .cloned()
            .unwrap_or(Value::Null),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;

    #[test]
    fn schema_statements_are_made_idempotent() {
        assert_eq!(
            if_not_exists(
                "person_id",
                "CREATE CONSTRAINT `person_id` FOR (n:`Person`) REQUIRE (n.`id`) IS UNIQUE"
            ),
            "CREATE CONSTRAINT `person_id` IF NOT EXISTS FOR (n:`Person`) REQUIRE (n.`id`) IS UNIQUE"
        );
        assert_eq!(
            if_not_exists("a`b", "CREATE RANGE INDEX `a``b` FOR (n:`X`) ON (n.`y`)"),
            "CREATE RANGE INDEX `a``b` IF NOT EXISTS FOR (n:`X`) ON (n.`y`)"
        );
    }

    #[test]
    fn the_plan_says_it_verifies_first_and_needs_an_empty_database() {
        let d = describe::<Neo4jRestore>(json!({
            "connection": "graph", "from": {"connection": "b", "key": "neo4j/1"}
        }));
        assert!(d.starts_with("verify object neo4j/1 in <b>"), "{d}");
        assert!(d.contains("must be empty"), "{d}");
        let r = parse::<Neo4jRestore>(json!({
            "method": "load", "from": {"connection": "b", "key": "k"}, "batch_size": 5
        }));
        assert_eq!(r.check()[0].field, "/method");
        assert!(r.destructive());
    }
}
