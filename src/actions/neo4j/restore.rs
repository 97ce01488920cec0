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
    /// Nodes or relationships per transaction (default 5000).
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

    /// A logical restore carries on from the progress its batches recorded (or from its note
    /// once loaded); a load overwrites the database whole.
    fn idempotent(&self) -> bool {
        true
    }

    fn unsupported(&self) -> Option<String> {
        self.from.s3_only(Self::NAME, "from", "reads from")
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

/// Two batches run while a third is read: at 10,000 lines the three held 205 MB at peak on the
/// benchmark's graph (neo4rs's values are large); at 5,000, 122 MB, and the restore was faster
/// (95 s against 113 s for 1M nodes and 2M relationships).
const DEFAULT_BATCH: u32 = 5_000;

/// What marks a node this restore loaded until the load is checked: a label with a unique id
/// (the export's), so a batch sent again merges with what it already made.
const MARK: &str = "__LifeboatRestore";
const MARK_ID: &str = "__lifeboat_id";
const MARK_CONSTRAINT: &str = "lifeboat_restore_id";
/// Where a load records, in the same transaction as each batch, how many lines of each kind it
/// has written (`kind`: `node` or `relationship`, `type`: the relationship type): a retry skips
/// them rather than merging them again, so every batch is a plain CREATE.
const PROGRESS: &str = "__LifeboatProgress";

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
        crate::actions::backup::expect_sha256(self.sha256.as_ref(), &object.sha256)?;
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
        &format!("MATCH (p:{PROGRESS}) DELETE p"),
        "removing a failed restore's progress",
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
        .await?
            + count(
                &target,
                &graph,
                &format!("MATCH (n:{PROGRESS}) RETURN count(n) AS n"),
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
        let done = progress(&target, &graph).await?;
        let loader_target = target.clone();
        let loader_graph = graph.clone();
        let handle = tokio::runtime::Handle::current();
        let loaded = open_from_s3(
            &s3c,
            &key,
            &sha,
            opener,
            Sink::Reader(Box::new(move |r| {
                load_lines(r, &handle, &loader_target, &loader_graph, batch, done)
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
                ..e
            });
        }
        (cx.note)("loaded", json!(true)).await?;
    }
    // Unmarking and the schema are idempotent: a resumed attempt runs them again. The
    // constraint goes first: only the load needs it, and removing the marks under it would
    // update its index a million times for nothing.
    run(
        &target,
        &graph,
        &format!("DROP CONSTRAINT {MARK_CONSTRAINT} IF EXISTS"),
        "dropping the load's constraint",
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
        &format!("MATCH (p:{PROGRESS}) DELETE p"),
        "removing the load's progress",
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
    // The database held nothing but this restore's nodes when it began (and writers are
    // stopped): the counts of the whole graph are the load's, read from the count store rather
    // than by a pass over a million nodes.
    let labels = counts(
        target,
        graph,
        &format!(
            "CALL db.labels() YIELD label WITH label WHERE NOT label IN ['{MARK}', '{PROGRESS}'] CALL (label) {{ MATCH (n:$(label)) RETURN count(n) AS c }} RETURN label AS k, c AS n"
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
        "CALL db.relationshipTypes() YIELD relationshipType AS t CALL (t) { MATCH ()-[r:$(t)]->() RETURN count(r) AS c } RETURN t AS k, c AS n",
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

/// A group of lines sent by one statement: nodes with one set of labels, or relationships of
/// one type. Labels and types are written in the statement: Neo4j 5.26 plans a dynamic
/// relationship type (`$(r.t)`) in a MERGE as a scan of every relationship for every row
/// (20 s for a batch of 10,000 into 10,000 relationships, 0.9 s with the type written), and
/// creates nodes twice as fast with their labels written as with `SET n:$(r.l)` (measured).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    /// The labels, sorted.
    Nodes(Vec<String>),
    Relationships(String),
}

impl Group {
    /// How the group is named in its progress node.
    fn kind(&self) -> &'static str {
        match self {
            Group::Nodes(_) => "node",
            Group::Relationships(_) => "relationship",
        }
    }

    fn key(&self) -> String {
        match self {
            Group::Nodes(labels) => serde_json::to_string(labels).expect("json"),
            Group::Relationships(t) => t.clone(),
        }
    }

    /// The statement for a batch of the group: it records, in the same transaction, which of
    /// the group's lines (`from` to `to`, counted from 1 in the stream) are in the database
    /// once it commits.
    fn statement(&self) -> String {
        let progress = format!(
            "WITH count(*) AS made CREATE (:{PROGRESS} {{kind: '{}', type: $group, from: $from, to: $to}})",
            self.kind()
        );
        match self {
            Group::Nodes(labels) => {
                let labels: String = labels
                    .iter()
                    .map(|l| format!(":{}", super::ident(l)))
                    .collect();
                format!("UNWIND $rows AS r CREATE (n:{MARK}{labels}) SET n = r.p {progress}")
            }
            Group::Relationships(t) => format!(
                "UNWIND $rows AS r MATCH (a:{MARK} {{{MARK_ID}: r.s}}) MATCH (b:{MARK} {{{MARK_ID}: r.e}}) CREATE (a)-[x:{}]->(b) SET x = r.p {progress}",
                super::ident(t)
            ),
        }
    }
}

/// What earlier attempts committed: per group (kind and key), ranges of its lines, sorted.
type Done = BTreeMap<(String, String), Vec<(u64, u64)>>;

/// Whether line `seq` of a group is in one of its committed ranges.
fn committed(ranges: &[(u64, u64)], seq: u64) -> bool {
    let i = ranges.partition_point(|(from, _)| *from <= seq);
    i > 0 && ranges[i - 1].1 >= seq
}

async fn progress(target: &Neo4jTarget, graph: &neo4rs::Graph) -> Result<Done, ActionError> {
    let doing = "reading an earlier attempt's progress";
    let mut rows = graph
        .execute(neo4rs::query(&format!(
            "MATCH (p:{PROGRESS}) RETURN p.kind AS kind, p.type AS type, p.from AS from, p.to AS to ORDER BY from"
        )))
        .await
        .map_err(|e| target.classify(&e, doing))?;
    let mut done = Done::new();
    while let Some(row) = rows.next().await.map_err(|e| target.classify(&e, doing))? {
        let text = |k: &str| {
            row.get::<String>(k)
                .map_err(|e| ActionError::permanent(format!("{doing}: {e}")))
        };
        let num = |k: &str| {
            row.get::<i64>(k)
                .map(|n| n.max(0) as u64)
                .map_err(|e| ActionError::permanent(format!("{doing}: {e}")))
        };
        done.entry((text("kind")?, text("type")?))
            .or_default()
            .push((num("from")?, num("to")?));
    }
    Ok(done)
}

/// Batches on their way to the server, two at a time: the server runs each on a core of its
/// own (measured on 1M nodes and 2M relationships: 1.45x the rate of one at a time; no
/// deadlocks between two batches creating relationships, and neo4rs sends a batch again when
/// the server reports one, which rolled it back). The next batch is read while they run.
const AT_ONCE: usize = 2;

struct InFlight<'h> {
    handle: &'h tokio::runtime::Handle,
    target: Neo4jTarget,
    graph: neo4rs::Graph,
    running: std::collections::VecDeque<tokio::task::JoinHandle<Result<(), neo4rs::Error>>>,
}

impl InFlight<'_> {
    fn send(
        &mut self,
        q: String,
        rows: &mut Vec<neo4rs::BoltType>,
        lines: (u64, u64),
        group: String,
    ) -> Result<(), String> {
        while self.running.len() >= AT_ONCE {
            self.wait_oldest()?;
        }
        let list = neo4rs::BoltType::List(std::mem::take(rows).into());
        let q = neo4rs::query(&q)
            .param("rows", list)
            .param("from", lines.0 as i64)
            .param("to", lines.1 as i64)
            .param("group", group);
        let graph = self.graph.clone();
        self.running.push_back(
            self.handle
                .spawn(async move { graph.run(q).await.map(|_| ()) }),
        );
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<(), String> {
        let Some(next) = self.running.pop_front() else {
            return Ok(());
        };
        let done = self
            .handle
            .block_on(next)
            .map_err(|e| format!("loading: the batch's task failed: {e}"))
            .and_then(|r| r.map_err(|e| self.target.classify(&e, "loading").message));
        if done.is_err() {
            // Nothing may still be writing when the caller removes what was loaded.
            while let Some(h) = self.running.pop_front() {
                let _ = self.handle.block_on(h);
            }
        }
        done
    }

    fn drain(&mut self) -> Result<(), String> {
        while !self.running.is_empty() {
            self.wait_oldest()?;
        }
        Ok(())
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // An early return (a bad line) must not leave batches writing behind it.
        for h in self.running.drain(..) {
            let _ = self.handle.block_on(h);
        }
    }
}

/// A group's lines not sent yet.
#[derive(Default)]
struct Pending {
    rows: Vec<neo4rs::BoltType>,
    /// The number (in the group, from 1) of the first of `rows`.
    first: u64,
    /// How many lines of the group the stream has had.
    seen: u64,
}

/// Reads the export's lines and sends them in batches (on the blocking side: `handle` runs the
/// async calls), a group at a time, every node before any relationship, skipping what `done`
/// says an earlier attempt committed. Each batch records its group's progress in its own
/// transaction.
fn load_lines(
    r: &mut dyn std::io::Read,
    handle: &tokio::runtime::Handle,
    target: &Neo4jTarget,
    graph: &neo4rs::Graph,
    batch: usize,
    done: Done,
) -> Result<(), String> {
    let mut flying = InFlight {
        handle,
        target: target.clone(),
        graph: graph.clone(),
        running: Default::default(),
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
    let mut groups: BTreeMap<Group, Pending> = BTreeMap::new();
    let mut pending = 0usize;
    let (mut n_nodes, mut n_rels) = (0u64, 0u64);
    let mut ended = None;
    let send = |flying: &mut InFlight, g: &Group, p: &mut Pending| {
        flying.send(g.statement(), &mut p.rows, (p.first, p.seen), g.key())
    };
    // Sends what every group holds; `only` picks which.
    let flush = |flying: &mut InFlight,
                 groups: &mut BTreeMap<Group, Pending>,
                 only: &dyn Fn(&Group) -> bool|
     -> Result<(), String> {
        for (g, p) in groups.iter_mut() {
            if only(g) && !p.rows.is_empty() {
                send(flying, g, p)?;
            }
        }
        Ok(())
    };
    for (i, line) in lines.enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        let at = i + 2;
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("line {at}: {e}"))?;
        let o = v
            .as_object()
            .ok_or_else(|| format!("line {at}: not an object"))?;
        let field = |k: &str| o.get(k).ok_or_else(|| format!("line {at}: no `{k}`"));
        // The properties, with what the row needs beside them.
        let props = |extra: Option<neo4rs::BoltType>| -> Result<neo4rs::BoltType, String> {
            let mut p = match value::untag(o.get("p").unwrap_or(&Value::Null))
                .map_err(|e| format!("line {at}: {e}"))?
            {
                neo4rs::BoltType::Map(m) => m,
                neo4rs::BoltType::Null(_) => neo4rs::BoltMap::new(),
                other => return Err(format!("line {at}: properties are {other:?}")),
            };
            if let Some(id) = extra {
                p.put(MARK_ID.into(), id);
            }
            Ok(neo4rs::BoltType::Map(p))
        };
        let (group, row) = if let Some(id) = o.get("n") {
            n_nodes += 1;
            let mut labels: Vec<String> = serde_json::from_value(field("l")?.clone())
                .map_err(|e| format!("line {at}: labels: {e}"))?;
            labels.sort();
            (Group::Nodes(labels), props(Some(value::untag(id)?)))
        } else if o.contains_key("r") {
            if n_rels == 0 {
                // A relationship's ends must be there before it is.
                flush(&mut flying, &mut groups, &|g| matches!(g, Group::Nodes(_)))?;
                flying.drain()?;
            }
            n_rels += 1;
            let t = field("t")?
                .as_str()
                .ok_or_else(|| format!("line {at}: the type is not a string"))?;
            let row = props(None).and_then(|p| {
                let mut m = neo4rs::BoltMap::new();
                m.put("s".into(), value::untag(field("s")?)?);
                m.put("e".into(), value::untag(field("e")?)?);
                m.put("p".into(), p);
                Ok(neo4rs::BoltType::Map(m))
            });
            (Group::Relationships(t.to_string()), row)
        } else if let Some(end) = o.get("end") {
            ended = Some(end.clone());
            continue;
        } else {
            return Err(format!(
                "line {at}: neither a node, a relationship nor the end"
            ));
        };
        let p = groups.entry(group.clone()).or_default();
        p.seen += 1;
        if done
            .get(&(group.kind().to_string(), group.key()))
            .is_some_and(|ranges| committed(ranges, p.seen))
        {
            continue;
        }
        if p.rows.is_empty() {
            p.first = p.seen;
        }
        let row = match row? {
            neo4rs::BoltType::Map(m) if matches!(group, Group::Nodes(_)) => {
                let mut wrapped = neo4rs::BoltMap::new();
                wrapped.put("p".into(), neo4rs::BoltType::Map(m));
                neo4rs::BoltType::Map(wrapped)
            }
            other => other,
        };
        p.rows.push(row);
        pending += 1;
        if p.rows.len() >= batch {
            pending -= p.rows.len();
            send(&mut flying, &group, p)?;
        }
        // Many groups, each short of a batch, must not hold the graph in memory.
        if pending >= 2 * batch {
            flush(&mut flying, &mut groups, &|_| true)?;
            pending = 0;
        }
    }
    flush(&mut flying, &mut groups, &|g| matches!(g, Group::Nodes(_)))?;
    flying.drain()?;
    flush(&mut flying, &mut groups, &|g| {
        matches!(g, Group::Relationships(_))
    })?;
    flying.drain()?;
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

    #[test]
    fn committed_lines_are_those_in_a_recorded_range() {
        let ranges = [(1, 10), (21, 30), (31, 35)];
        for (seq, want) in [
            (1, true),
            (10, true),
            (11, false),
            (20, false),
            (21, true),
            (35, true),
            (36, false),
        ] {
            assert_eq!(committed(&ranges, seq), want, "{seq}");
        }
        assert!(!committed(&[], 1));
    }

    #[test]
    fn each_group_writes_its_labels_or_type_in_the_statement() {
        let n = Group::Nodes(vec!["Doc".into(), "In`dexed".into()]).statement();
        assert!(
            n.contains("CREATE (n:__LifeboatRestore:`Doc`:`In``dexed`) SET n = r.p"),
            "{n}"
        );
        assert!(
            n.contains("kind: 'node', type: $group, from: $from, to: $to"),
            "{n}"
        );
        let r = Group::Relationships("KNOWS".into()).statement();
        assert!(r.contains("CREATE (a)-[x:`KNOWS`]->(b) SET x = r.p"), "{r}");
        assert_eq!(
            Group::Nodes(vec!["A".into(), "B".into()]).key(),
            r#"["A","B"]"#
        );
    }
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
