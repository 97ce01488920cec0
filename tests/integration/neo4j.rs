//! The Neo4j test server (scripts/neo4j-server): the facts the Neo4j actions will rely on, proved
//! against the real Neo4j 5.26 Community from Maven Central.

use crate::common;

use common::neo4j::{Neo4jServer, PASSWORD};

/// Bolt 4.4 (what neo4rs speaks) on loopback, auth enforced, and no socket of the server's
/// reaching beyond loopback (usage reporting is off; this machine may send nothing else).
#[test]
fn the_test_server_speaks_bolt_4_4_on_loopback_with_auth() {
    let n = Neo4jServer::start();
    assert_eq!(n.handshake(&[(5, 4), (4, 4)]).1, (5, 4), "Bolt 5 too");
    assert_eq!(n.handshake(&[(4, 4)]).1, (4, 4));
    assert_eq!(n.handshake(&[(3, 0)]).1, (0, 0), "no Bolt 3");
    assert!(n.authenticates("neo4j", PASSWORD));
    assert!(!n.authenticates("neo4j", "not-the-password"));
    let sockets = std::process::Command::new("ss")
        .args(["-Htanp"])
        .output()
        .expect("ss (iproute2) lists sockets");
    let mine = format!("pid={},", n.pid());
    let text = String::from_utf8_lossy(&sockets.stdout);
    let own: Vec<&str> = text.lines().filter(|l| l.contains(&mine)).collect();
    assert!(!own.is_empty(), "the server's sockets are listed: {text}");
    for line in own {
        let cols: Vec<&str> = line.split_whitespace().collect();
        for addr in &cols[3..5] {
            let host = addr.rsplit_once(':').map_or(*addr, |(h, _)| h);
            assert!(
                host.contains("127.0.0.1") || host == "[::1]" || host == "*",
                "a socket beyond loopback: {line}"
            );
        }
    }
}

/// `neo4j-admin database dump` is refused while the server runs (Community has no online
/// backup: its store is locked) and works on the stopped server's folder.
#[test]
fn a_running_server_refuses_a_dump_and_a_stopped_one_dumps() {
    let n = Neo4jServer::start();
    let dump = || {
        std::process::Command::new(common::root().join("scripts/neo4j-server"))
            .args(["admin"])
            .arg(&n.dir)
            .args(["database", "dump", "neo4j", "--to-path"])
            .arg(n.dir.join("import"))
            .output()
            .unwrap()
    };
    assert!(
        !dump().status.success(),
        "a dump of a running DBMS is refused"
    );
    common::stop_service("neo4j-server", &n.dir);
    let stopped = dump();
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(n.dir.join("import/neo4j.dump").metadata().unwrap().len() > 0);
}

use common::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use common::sandbox::{Sandbox, runbook};

impl Neo4jServer {
    /// A `connections:` entry for lifeboat, the password as secret `neo4j_password`.
    fn connection(&self, name: &str) -> String {
        format!(
            "  {name}: {{neo4j: {{uri: \"bolt://127.0.0.1:{}\", password: \"{{{{ secrets.neo4j_password }}}}\"}}}}\n",
            self.port
        )
    }
}

const SECRETS: &str = "secrets:\n  neo4j_password: {env: LB_NEO4J_PASSWORD}\n  s3_key: {env: LB_S3_KEY}\n  s3_secret: {env: LB_S3_SECRET}\n  pass: {env: LB_PASS}\n";

fn run(sb: &Sandbox, file: &str) -> common::sandbox::Ran {
    sb.lifeboat_env(
        &["run", file],
        &[
            ("LB_NEO4J_PASSWORD", PASSWORD),
            ("LB_S3_KEY", ACCESS_KEY),
            ("LB_S3_SECRET", SECRET_KEY),
            ("LB_PASS", "backup-passphrase-7"),
        ],
    )
}

/// Every property type Neo4j stores, an index, a uniqueness constraint and a vector index; two
/// relationship types (a restore sends each its own statement), self-loops among them.
const SEED: &str = r#"UNWIND range(1, 300) AS i
CREATE (d:Doc:Indexed {id: i, title: 'doc ' + i, score: i / 7.0, ok: i % 2 = 0,
  day: date('2024-02-29'), at: datetime('2024-07-01T12:00:00.123456789[Europe/Paris]'),
  off: datetime('2024-07-01T12:00:00+05:30'), local: localdatetime('2024-07-01T12:00:00'),
  t: time('12:00:00+01:00'), lt: localtime('23:59:59.5'), span: duration('P1Y2M3DT4.5S'),
  where: point({longitude: 12.5, latitude: 55.25}), xyz: point({x: 1, y: 2, z: 3}),
  raw: $raw, tags: ['a', 'b'], nums: [1, 2, 3], emb: [i * 0.1, 1.0, -0.5]})
WITH d, i WHERE i > 1
MATCH (p:Doc {id: i - 1})
CREATE (p)-[:NEXT {w: i, since: date('2020-01-01')}]->(d), (d)-[:SELF {i: i}]->(d)"#;

fn seed_steps(conn: &str) -> String {
    format!(
        r#"  - {{id: c1, action: neo4j.query, with: {{connection: {conn}, writes: true, cypher: "CREATE CONSTRAINT doc_id IF NOT EXISTS FOR (d:Doc) REQUIRE d.id IS UNIQUE"}}}}
  - {{id: c2, action: neo4j.query, needs: [c1], with: {{connection: {conn}, writes: true, cypher: "CREATE INDEX doc_title IF NOT EXISTS FOR (d:Doc) ON (d.title)"}}}}
  - {{id: c3, action: neo4j.query, needs: [c2], with: {{connection: {conn}, writes: true, cypher: "CREATE VECTOR INDEX doc_emb IF NOT EXISTS FOR (d:Doc) ON (d.emb) OPTIONS {{indexConfig: {{`vector.dimensions`: 3, `vector.similarity_function`: 'cosine'}}}}"}}}}
  - id: seed
    action: neo4j.query
    needs: [c3]
    with:
      connection: {conn}
      writes: true
      params: {{raw: {{"$bytes": "AAEC/w=="}}}}
      cypher: |
{}
"#,
        SEED.lines()
            .map(|l| format!("        {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

const READ_BACK: &str =
    "MATCH (d:Doc {id: 42})<-[r:NEXT]-(p) RETURN d, r.w AS w, r.since AS since, p.id AS prev";

/// A logical backup of every property type, indexes and constraints (a vector index among
/// them), encrypted, restored into another server: the same graph comes back, its schema
/// online; a second restore into the now full database is refused and changes nothing; a
/// backup whose manifest does not match its contents is refused and leaves nothing behind.
#[test]
fn a_logical_backup_restores_every_type_and_the_schema_or_nothing() {
    let (src, dst) = (Neo4jServer::start(), Neo4jServer::start());
    let s3 = S3Server::start(&["backups"]);
    let sb = Sandbox::new();
    let connections = format!(
        "connections:\n{}{}{}",
        src.connection("src"),
        dst.connection("dst"),
        s3.connection("backups", "backups")
    );
    let read = |conn: &str, after: &str| {
        format!(
            "  - {{id: read_{conn}, action: neo4j.query, needs: [{after}], with: {{connection: {conn}, cypher: \"{READ_BACK}\"}}}}\n"
        )
    };
    sb.write(
        "r.yaml",
        &runbook(
            "neo4j-round-trip",
            &format!(
                "{SECRETS}{connections}steps:\n{}  - {{id: backup, action: neo4j.backup, needs: [seed], with: {{connection: src, to: {{connection: backups, key: neo4j/1}}, encrypt: {{passphrase: \"{{{{ secrets.pass }}}}\"}}}}}}\n  - {{id: restore, action: neo4j.restore, needs: [backup], with: {{connection: dst, from: {{connection: backups, key: neo4j/1}}, decrypt_with: \"{{{{ secrets.pass }}}}\", batch_size: 64}}}}\n{}{}  - {{id: schema, action: neo4j.query, needs: [restore], with: {{connection: dst, cypher: \"SHOW INDEXES YIELD name, type, state WHERE name STARTS WITH 'doc' RETURN name, type, state ORDER BY name\"}}}}\n",
                seed_steps("src"),
                read("src", "seed"),
                read("dst", "restore"),
            ),
        ),
    );
    let r = run(&sb, "r.yaml");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id = r.run_id();
    let out = |s: &str| sb.outputs(&id, s);
    let backup = out("backup");
    assert_eq!(backup["nodes"], 300);
    assert_eq!(backup["relationships"], 598);
    assert_eq!(
        backup["types"],
        serde_json::json!({"NEXT": 299, "SELF": 299})
    );
    assert_eq!(
        backup["labels"],
        serde_json::json!({"Doc": 300, "Indexed": 300})
    );
    assert_eq!(backup["server_version"], "5.26.30");
    let restored = out("restore");
    for k in ["nodes", "relationships", "labels", "types"] {
        assert_eq!(restored[k], backup[k], "{k}");
    }
    let (a, b) = (out("read_src"), out("read_dst"));
    assert_eq!(a["row_count"], 1);
    let strip = |mut v: serde_json::Value| {
        v["rows"][0]["d"]["id"] = serde_json::Value::Null;
        v
    };
    assert_eq!(
        strip(b.clone()),
        strip(a.clone()),
        "the same node, every type intact"
    );
    let d = &b["rows"][0]["d"]["properties"];
    assert_eq!(d["at"], "2024-07-01T12:00:00.123456789[Europe/Paris]");
    assert_eq!(d["span"], "P1Y2M3DT4.5S");
    assert_eq!(d["raw"], "AAEC/w==");
    assert_eq!(d["where"]["srid"], 4326);
    assert_eq!(
        out("schema")["rows"],
        serde_json::json!([
            {"name": "doc_emb", "state": "ONLINE", "type": "VECTOR"},
            {"name": "doc_id", "state": "ONLINE", "type": "RANGE"},
            {"name": "doc_title", "state": "ONLINE", "type": "RANGE"},
        ])
    );
    let plain = sb.read(&format!(".lifeboat/runs/{id}/log.jsonl"));
    assert!(!plain.contains("backup-passphrase-7") && !plain.contains(PASSWORD));

    // Into a database that is no longer empty: refused before anything is written.
    sb.write(
        "again.yaml",
        &runbook(
            "neo4j-again",
            &format!(
                "{SECRETS}{connections}steps:\n  - {{id: restore, action: neo4j.restore, with: {{connection: dst, from: {{connection: backups, key: neo4j/1}}, decrypt_with: \"{{{{ secrets.pass }}}}\"}}}}\n"
            ),
        ),
    );
    let again = run(&sb, "again.yaml");
    assert_ne!(again.code, 0);
    let why = sb.failure(&again.run_id());
    assert!(
        why.contains("holds 300 node(s)") && why.contains("nothing was restored"),
        "{why}"
    );

    // A manifest that promises more than the backup holds: loaded, found short, removed.
    let mkey = s3.dir.join("manifest.json");
    sb.write(
        "get.yaml",
        &runbook(
            "get",
            &format!(
                "{SECRETS}{connections}steps:\n  - {{id: get, action: s3.get, with: {{connection: backups, key: neo4j/1.manifest.json, to: \"{}\"}}}}\n  - {{id: empty, action: neo4j.query, with: {{connection: dst, writes: true, cypher: \"MATCH (n) CALL (n) {{ DETACH DELETE n }} IN TRANSACTIONS\"}}}}\n",
                mkey.display()
            ),
        ),
    );
    assert_eq!(run(&sb, "get.yaml").code, 0);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mkey).unwrap()).unwrap();
    m["labels"]["Doc"] = 301.into();
    std::fs::write(&mkey, serde_json::to_vec(&m).unwrap()).unwrap();
    sb.write(
        "short.yaml",
        &runbook(
            "short",
            &format!(
                "{SECRETS}{connections}steps:\n  - {{id: put, action: s3.put, with: {{connection: backups, key: neo4j/1.manifest.json, file: \"{}\"}}}}\n  - {{id: restore, action: neo4j.restore, needs: [put], with: {{connection: dst, from: {{connection: backups, key: neo4j/1}}, decrypt_with: \"{{{{ secrets.pass }}}}\"}}}}\n",
                mkey.display()
            ),
        ),
    );
    let short = run(&sb, "short.yaml");
    assert_ne!(short.code, 0);
    let why = sb.failure(&short.run_id());
    assert!(
        why.contains("label `Doc`: 300, the manifest says 301")
            && why.contains("what was loaded is removed"),
        "{why}"
    );
    sb.write(
        "count.yaml",
        &runbook(
            "count",
            &format!(
                "{SECRETS}{connections}steps:\n  - {{id: n, action: neo4j.query, with: {{connection: dst, cypher: \"MATCH (n) RETURN count(n) AS n\"}}}}\n  - {{id: c, action: neo4j.query, with: {{connection: dst, cypher: \"SHOW CONSTRAINTS YIELD name WHERE name = 'lifeboat_restore_id' RETURN count(*) AS n\"}}}}\n"
            ),
        ),
    );
    let c = run(&sb, "count.yaml");
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert_eq!(
        sb.outputs(&c.run_id(), "n")["rows"][0]["n"],
        0,
        "nothing left behind"
    );
    assert_eq!(
        sb.outputs(&c.run_id(), "c")["rows"][0]["n"],
        0,
        "nor the load's constraint"
    );
}

/// A logical restore killed (SIGKILL) while it loads nodes, resumed, killed again while it
/// loads relationships, and resumed to the end: every batch recorded its progress in its own
/// transaction, so each resume skips what was committed and nothing is made twice.
#[test]
fn a_restore_killed_twice_mid_load_resumes_to_the_same_graph() {
    let (src, dst) = (Neo4jServer::start(), Neo4jServer::start());
    let s3 = S3Server::start(&["backups"]);
    let sb = Sandbox::new();
    let connections = format!(
        "connections:\n{}{}{}",
        src.connection("src"),
        dst.connection("dst"),
        s3.connection("backups", "backups")
    );
    sb.write(
        "backup.yaml",
        &runbook(
            "neo4j-backup",
            &format!(
                "{SECRETS}{connections}steps:\n{}  - {{id: backup, action: neo4j.backup, needs: [seed], with: {{connection: src, to: {{connection: backups, key: neo4j/1}}}}}}\n  - {{id: read, action: neo4j.query, needs: [seed], with: {{connection: src, cypher: \"{READ_BACK}\"}}}}\n",
                seed_steps("src")
            ),
        ),
    );
    let b = run(&sb, "backup.yaml");
    assert_eq!(b.code, 0, "{}", b.stderr);
    let before = sb.outputs(&b.run_id(), "read");
    // One node or relationship per batch: slow enough to be killed in each phase.
    sb.write(
        "restore.yaml",
        &runbook(
            "neo4j-restore",
            &format!(
                "{SECRETS}{connections}steps:\n  - {{id: restore, action: neo4j.restore, with: {{connection: dst, from: {{connection: backups, key: neo4j/1}}, batch_size: 1}}}}\n  - {{id: read, action: neo4j.query, needs: [restore], with: {{connection: dst, cypher: \"{READ_BACK}\"}}}}\n"
            ),
        ),
    );
    sb.write(
        "poll.yaml",
        &runbook(
            "poll",
            &format!(
                "{SECRETS}{connections}steps:\n  - {{id: p, action: neo4j.query, with: {{connection: dst, cypher: \"OPTIONAL MATCH (n:__LifeboatProgress {{kind: 'node'}}) WITH coalesce(sum(n.to - n.from + 1), 0) AS nodes OPTIONAL MATCH (r:__LifeboatProgress {{kind: 'relationship'}}) RETURN nodes, coalesce(sum(r.to - r.from + 1), 0) AS rels\"}}}}\n"
            ),
        ),
    );
    let env = [
        ("LB_NEO4J_PASSWORD", PASSWORD),
        ("LB_S3_KEY", ACCESS_KEY),
        ("LB_S3_SECRET", SECRET_KEY),
        ("LB_PASS", "unused"),
    ];
    let progress = || {
        let p = run(&sb, "poll.yaml");
        assert_eq!(p.code, 0, "{}", p.stderr);
        let row = &sb.outputs(&p.run_id(), "p")["rows"][0];
        (
            row["nodes"].as_u64().unwrap(),
            row["rels"].as_u64().unwrap(),
        )
    };
    // Starts `args` and kills it once `reached` holds of the progress.
    let kill_when = |args: &[&str], reached: &dyn Fn((u64, u64)) -> bool| {
        let mut c = sb.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.stdout(std::process::Stdio::piped()).spawn().unwrap();
        let mut seen = (0, 0);
        for _ in 0..600 {
            seen = progress();
            if reached(seen) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(reached(seen), "never got there: {seen:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let id = kill_when(&["run", "restore.yaml"], &|(n, _)| n >= 50);
    let (nodes_then, _) = progress();
    assert!(
        nodes_then < 300,
        "killed while nodes were loading: {nodes_then}"
    );
    let again = kill_when(&["resume", &id], &|(n, r)| n == 300 && r >= 50);
    assert_eq!(again, id, "resume continues the same run");
    let (_, rels_then) = progress();
    assert!(
        rels_then < 598,
        "killed while relationships were loading: {rels_then}"
    );
    let done = sb.lifeboat_env(&["resume", &id], &env);
    assert_eq!(done.code, 0, "{}", done.stderr);
    let restored = sb.outputs(&id, "restore");
    assert_eq!(
        (&restored["nodes"], &restored["relationships"]),
        (&300.into(), &598.into())
    );
    let mut after = sb.outputs(&id, "read");
    let mut before = before;
    before["rows"][0]["d"]["id"] = serde_json::Value::Null;
    after["rows"][0]["d"]["id"] = serde_json::Value::Null;
    assert_eq!(after, before, "the same graph, every type intact");
    assert_eq!(progress(), (0, 0), "the progress is removed with the marks");
}

/// Each way a connection or a statement can fail is told apart: a wrong password and a
/// syntax error are not retried, a server that is not there is, and a server that takes no
/// Bolt version lifeboat speaks, or answers nothing, fails in bounded time.
#[test]
fn neo4j_failures_are_clear_and_classified() {
    let n = Neo4jServer::start();
    // A listener that agrees to no Bolt version, and one that never answers.
    let refuse = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refuse_port = refuse.local_addr().unwrap().port();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in refuse.incoming() {
            let mut s = s.unwrap();
            let mut hello = [0u8; 20];
            if s.read_exact(&mut hello).is_ok() {
                let _ = s.write_all(&[0, 0, 0, 0]);
            }
        }
    });
    let _held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for s in silent.incoming() {
            open.push(s);
        }
    });
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let sb = Sandbox::new();
    let conn = |name: &str, port: u16, pw: &str| {
        format!("  {name}: {{neo4j: {{uri: \"bolt://127.0.0.1:{port}\", password: \"{pw}\"}}}}\n")
    };
    let connections = format!(
        "connections:\n{}{}{}{}{}",
        n.connection("good"),
        conn("wrong_pw", n.port, "not-the-password"),
        conn("refuses", refuse_port, "x"),
        conn("silent", silent_port, "x"),
        conn("gone", dead_port, "x"),
    );
    let step = |id: &str, c: &str, cypher: &str| {
        format!(
            "  - {{id: {id}, action: neo4j.query, on_failure: continue, retry: {{attempts: 2, delay: 10ms}}, with: {{connection: {c}, cypher: \"{cypher}\"}}}}\n"
        )
    };
    sb.write(
        "r.yaml",
        &runbook(
            "neo4j-failures",
            &format!(
                "{SECRETS}{connections}steps:\n{}{}{}{}{}",
                step("auth", "wrong_pw", "RETURN 1"),
                step("syntax", "good", "RETRUN 1"),
                step("bolt", "refuses", "RETURN 1"),
                step("silent", "silent", "RETURN 1"),
                step("gone", "gone", "RETURN 1"),
            ),
        ),
    );
    let r = run(&sb, "r.yaml");
    let events = sb.events(&r.run_id());
    let attempts = |step: &str| {
        events
            .iter()
            .filter(|e| e["event"] == "step_started" && e["step"] == step)
            .count()
    };
    let error = |step: &str| {
        events
            .iter()
            .rev()
            .find(|e| e["event"] == "step_failed" && e["step"] == step)
            .map(|e| e["error"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{step} did not fail: {}", r.stderr))
    };
    assert!(
        error("auth").contains("refused the credentials"),
        "{}",
        error("auth")
    );
    assert_eq!(attempts("auth"), 1, "a wrong password is not retried");
    assert!(
        error("syntax").contains("Neo.ClientError.Statement.SyntaxError"),
        "{}",
        error("syntax")
    );
    assert_eq!(attempts("syntax"), 1);
    assert!(error("bolt").contains("Bolt 4.4"), "{}", error("bolt"));
    assert_eq!(
        attempts("bolt"),
        1,
        "a server speaking no Bolt lifeboat speaks is not retried"
    );
    assert!(error("silent").contains("no answer"), "{}", error("silent"));
    assert!(
        error("gone").contains(&format!("127.0.0.1:{dead_port}")),
        "{}",
        error("gone")
    );
    assert_eq!(
        attempts("gone"),
        2,
        "a server that is not there (yet) is retried"
    );
    assert!(!r.stderr.contains("not-the-password"));
}

/// The shipped runbooks against a real graph: runbooks/neo4j-backup.yaml takes the backup, and
/// the data-corruption drill of runbooks/neo4j-restore.yaml deletes a third of the graph and
/// recovers it from that backup, measured.
#[test]
fn the_shipped_neo4j_runbooks_back_up_and_recover_from_a_corruption_drill() {
    use age::secrecy::ExposeSecret;
    let n = Neo4jServer::start();
    let s3 = S3Server::start(&["graph-backups"]);
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let sb = Sandbox::new();
    sb.write(
        "seed.yaml",
        &runbook(
            "seed",
            &format!(
                "{SECRETS}connections:\n{}steps:\n{}",
                n.connection("src"),
                seed_steps("src")
            ),
        ),
    );
    assert_eq!(run(&sb, "seed.yaml").code, 0);
    let root = common::root();
    let params = |extra: &[&str]| {
        let mut p: Vec<String> = [
            format!("neo4j_uri=bolt://127.0.0.1:{}", n.port),
            "s3_bucket=graph-backups".into(),
            format!("s3_endpoint={}", s3.endpoint),
            "s3_path_style=true".into(),
            "writers=none".into(),
        ]
        .into_iter()
        .chain(extra.iter().map(|s| s.to_string()))
        .collect();
        p.iter_mut().for_each(|s| s.insert_str(0, "-p"));
        p
    };
    let secret_id = id.to_string();
    let env = [
        ("NEO4J_PASSWORD", PASSWORD),
        ("LIFEBOAT_S3_ACCESS_KEY", ACCESS_KEY),
        ("LIFEBOAT_S3_SECRET_KEY", SECRET_KEY),
        ("LIFEBOAT_AGE_IDENTITY", secret_id.expose_secret()),
    ];
    let backup_file = root.join("runbooks/neo4j-backup.yaml");
    let mut args = vec!["run".to_string(), backup_file.display().to_string()];
    args.extend(params(&[&format!("age_recipient={recipient}")]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = sb.lifeboat_env(&args, &env);
    assert_eq!(b.code, 0, "{}", b.stderr);
    assert_eq!(sb.outputs(&b.run_id(), "export")["nodes"], 300);

    let restore_file = root.join("runbooks/neo4j-restore.yaml");
    let report = sb.path("drill");
    let mut args = vec![
        "drill".to_string(),
        restore_file.display().to_string(),
        "--scenario".into(),
        "data-corruption".into(),
        "--yes".into(),
        "--report".into(),
        report.display().to_string(),
    ];
    args.extend(params(&["min_nodes=300"]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = sb.lifeboat_env(&args, &env);
    assert_eq!(d.code, 0, "{}\n{}", d.stdout, d.stderr);
    let run_id = d.run_id();
    let inject = sb
        .events(&run_id)
        .into_iter()
        .find(|e| e["event"] == "step_succeeded" && e["step"] == "delete_a_third")
        .expect("the fault was injected");
    assert_eq!(inject["outputs"]["counters"]["nodes_deleted"], 100);
    let restored = sb.outputs(&run_id, "restore");
    assert_eq!(restored["nodes"], 300);
    assert_eq!(restored["relationships"], 598);
    let md = std::fs::read_to_string(sb.path("drill.md")).unwrap();
    assert!(md.contains("RPO"), "{md}");
    assert!(!md.contains(PASSWORD));
}

/// The offline route: `neo4j-admin database dump` of a stopped server streamed to S3, loaded
/// into another stopped server, which then serves the graph; and the legacy scripts' backup
/// (`neo4j_*.dump.gz.enc`: gzip, then `openssl enc -aes-256-cbc -pbkdf2 -iter 100000`, with its
/// `.sha256`) loaded the same way.
#[test]
fn a_dump_loads_into_a_stopped_server_and_so_does_a_legacy_one() {
    let src = Neo4jServer::start();
    let mut dst = Neo4jServer::start();
    let s3 = S3Server::start(&["backups"]);
    let sb = Sandbox::new();
    sb.write(
        "seed.yaml",
        &runbook(
            "seed",
            &format!(
                "{SECRETS}connections:\n{}steps:\n{}",
                src.connection("src"),
                seed_steps("src")
            ),
        ),
    );
    assert_eq!(run(&sb, "seed.yaml").code, 0);
    common::stop_service("neo4j-server", &src.dir);
    common::stop_service("neo4j-server", &dst.dir);
    let script = common::root().join("scripts/neo4j-server");
    let admin =
        |n: &Neo4jServer| format!("[\"{}\", admin, \"{}\"]", script.display(), n.dir.display());
    // The legacy scripts' format, made by the tools they used, from a dump of the source.
    let dumped = std::process::Command::new(&script)
        .arg("admin")
        .arg(&src.dir)
        .args(["database", "dump", "neo4j", "--to-path"])
        .arg(&src.dir)
        .output()
        .unwrap();
    assert!(
        dumped.status.success(),
        "{}",
        String::from_utf8_lossy(&dumped.stderr)
    );
    let legacy = sb.path("neo4j_20240101.dump.gz.enc");
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -c '{}' | openssl enc -aes-256-cbc -pbkdf2 -iter 100000 -salt -pass env:LB_PASS > '{}' && sha256sum '{}' > '{}.sha256'",
            src.dir.join("neo4j.dump").display(),
            legacy.display(),
            legacy.display(),
            legacy.display()
        ))
        .env("LB_PASS", "backup-passphrase-7")
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let connections = format!("connections:\n{}", s3.connection("backups", "backups"));
    sb.write(
        "offline.yaml",
        &runbook(
            "offline",
            &format!(
                "{SECRETS}{connections}steps:\n  - {{id: dump, action: neo4j.backup, with: {{method: dump, admin_command: {}, to: {{connection: backups, key: neo4j/1.dump.zst.age}}, encrypt: {{passphrase: \"{{{{ secrets.pass }}}}\"}}}}}}\n  - {{id: load, action: neo4j.restore, needs: [dump], with: {{method: load, admin_command: {}, from: {{connection: backups, key: neo4j/1.dump.zst.age}}, decrypt_with: \"{{{{ secrets.pass }}}}\"}}}}\n  - {{id: put_legacy, action: s3.put, with: {{connection: backups, key: old/neo4j_20240101.dump.gz.enc, file: \"{}\"}}}}\n  - {{id: put_sum, action: s3.put, with: {{connection: backups, key: old/neo4j_20240101.dump.gz.enc.sha256, file: \"{}.sha256\"}}}}\n",
                admin(&src),
                admin(&dst),
                legacy.display(),
                legacy.display(),
            ),
        ),
    );
    let r = run(&sb, "offline.yaml");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        sb.outputs(&r.run_id(), "dump")["plain_size"]
            .as_u64()
            .unwrap()
            > 0
    );
    let count = |n: &Neo4jServer, name: &str| {
        sb.write(
            &format!("{name}.yaml"),
            &runbook(
                name,
                &format!(
                    "{SECRETS}connections:\n{}steps:\n  - {{id: n, action: neo4j.query, with: {{connection: g, cypher: \"MATCH (d:Doc)-[r:NEXT]->() RETURN count(r) AS n\"}}}}\n",
                    n.connection("g")
                ),
            ),
        );
        let c = run(&sb, &format!("{name}.yaml"));
        assert_eq!(c.code, 0, "{}", c.stderr);
        sb.outputs(&c.run_id(), "n")["rows"][0]["n"].clone()
    };
    dst.restart();
    assert_eq!(count(&dst, "after-load"), 299);

    // Now the legacy backup over it: the server stopped again, loaded, started.
    common::stop_service("neo4j-server", &dst.dir);
    sb.write(
        "legacy.yaml",
        &runbook(
            "legacy",
            &format!(
                "{SECRETS}{connections}steps:\n  - {{id: wrong, action: neo4j.restore, on_failure: continue, with: {{method: logical, connection: none, from: {{connection: backups, key: old/neo4j_20240101.dump.gz.enc}}, decrypt_with: x}}}}\n  - {{id: load, action: neo4j.restore, with: {{method: load, admin_command: {}, from: {{connection: backups, key: old/neo4j_20240101.dump.gz.enc}}, decrypt_with: \"{{{{ secrets.pass }}}}\"}}}}\n",
                admin(&dst),
            ),
        )
        .replace("connections:\n", "connections:\n  none: {neo4j: {uri: \"bolt://127.0.0.1:1\"}}\n"),
    );
    let l = run(&sb, "legacy.yaml");
    assert_eq!(l.code, 0, "{}", l.stderr);
    let why = sb.failure(&l.run_id());
    assert!(
        why.contains("use `method: load`") || why.contains("not what `method: logical` loads"),
        "{why}"
    );
    dst.restart();
    assert_eq!(count(&dst, "after-legacy"), 299);
}

/// runbooks/graph-and-vector-backup.yaml and -restore.yaml against a real graph and an index
/// directory: a pair backed up at one consistency point and checked against each other; a
/// pair that disagrees is refused and both halves deleted; the drill corrupts both and
/// recovers them from the newest pair, the index byte for byte, the corrupted one kept.
#[test]
fn the_graph_and_its_vector_index_are_backed_up_and_recovered_as_one() {
    use age::secrecy::ExposeSecret;
    let n = Neo4jServer::start();
    let s3 = S3Server::start(&["search-backups"]);
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let sb = Sandbox::new();
    sb.write(
        "seed.yaml",
        &runbook(
            "seed",
            &format!(
                "{SECRETS}connections:\n{}steps:\n  - {{id: seed, action: neo4j.query, with: {{connection: src, writes: true, cypher: \"UNWIND range(1, 30) AS i CREATE (d:Document {{id: i, title: 'doc ' + i, indexed_at: datetime('2026-11-30T00:00:00Z')}})-[:IN]->(:Topic {{name: 't' + i}}) WITH count(*) AS made CREATE (:Document {{id: 31, title: 'not yet indexed'}})\"}}}}\n",
                n.connection("src"),
            ),
        ),
    );
    let seeded = run(&sb, "seed.yaml");
    assert_eq!(seeded.code, 0, "{}", seeded.stderr);
    let index = sb.path("index");
    std::fs::create_dir_all(index.join("vectors")).unwrap();
    std::fs::write(
        index.join("meta.json"),
        r#"{"documents": 30, "dimensions": 4}"#,
    )
    .unwrap();
    let vectors: Vec<u8> = (0..30 * 4 * 4).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(index.join("vectors/part-0.bin"), &vectors).unwrap();
    std::fs::write(
        index.join("ids.txt"),
        (1..=30).map(|i| format!("{i}\n")).collect::<String>(),
    )
    .unwrap();

    let root = common::root();
    let params = |extra: &[String]| {
        let mut p: Vec<String> = [
            format!("neo4j_uri=bolt://127.0.0.1:{}", n.port),
            "s3_bucket=search-backups".into(),
            format!("s3_endpoint={}", s3.endpoint),
            "s3_path_style=true".into(),
            "writers=none".into(),
            format!("index_dir={}", index.display()),
        ]
        .into_iter()
        .chain(extra.iter().cloned())
        .collect();
        p.iter_mut().for_each(|s| s.insert_str(0, "-p"));
        p
    };
    let secret_id = id.to_string();
    let env = [
        ("NEO4J_PASSWORD", PASSWORD),
        ("LIFEBOAT_S3_ACCESS_KEY", ACCESS_KEY),
        ("LIFEBOAT_S3_SECRET_KEY", SECRET_KEY),
        ("LIFEBOAT_AGE_IDENTITY", secret_id.expose_secret()),
    ];
    let lifeboat = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sb.lifeboat_env(&args, &env)
    };
    let backup_file = root.join("runbooks/graph-and-vector-backup.yaml");
    let backup = |extra: &[String]| {
        let mut args = vec!["run".to_string(), backup_file.display().to_string()];
        args.extend(params(
            &[&[format!("age_recipient={recipient}")], extra].concat(),
        ));
        lifeboat(args)
    };
    let b = backup(&[]);
    assert_eq!(b.code, 0, "{}", b.stderr);
    let first = b.run_id();
    assert_eq!(sb.outputs(&first, "graph")["nodes"], 61);
    assert_eq!(sb.outputs(&first, "index")["metadata"]["documents"], 30);
    assert_eq!(sb.outputs(&first, "cross_check")["rows"][0]["indexed"], 30);

    // The index says one document more than the graph: no backup; both halves deleted.
    std::fs::write(
        index.join("meta.json"),
        r#"{"documents": 31, "dimensions": 4}"#,
    )
    .unwrap();
    let bad = backup(&[]);
    assert_ne!(bad.code, 0, "a pair that disagrees is no backup");
    let failed = bad.run_id();
    assert!(
        sb.failure(&failed)
            .contains("steps.index.outputs.metadata[params.index_count_field]` is false"),
        "{}",
        sb.failure(&failed)
    );
    std::fs::write(
        index.join("meta.json"),
        r#"{"documents": 30, "dimensions": 4}"#,
    )
    .unwrap();
    sb.write(
        "list.yaml",
        &runbook(
            "list",
            &format!(
                "{SECRETS}connections:\n{}steps:\n  - {{id: list, action: s3.list, with: {{connection: b, prefix: graph-and-vector/}}}}\n",
                s3.connection("b", "search-backups")
            ),
        ),
    );
    let listed = run(&sb, "list.yaml");
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let keys = sb.outputs(&listed.run_id(), "list").to_string();
    assert!(keys.contains(&first), "{keys}");
    assert!(
        !keys.contains(&failed),
        "the refused pair was deleted: {keys}"
    );

    // The drill: both corrupted, both recovered from the newest pair.
    let restore_file = root.join("runbooks/graph-and-vector-restore.yaml");
    let mut args = vec![
        "drill".to_string(),
        restore_file.display().to_string(),
        "--scenario".into(),
        "both-corrupted".into(),
        "--yes".into(),
        "--report".into(),
        sb.path("drill").display().to_string(),
    ];
    args.extend(params(&["min_documents=30".to_string()]));
    let d = lifeboat(args);
    assert_eq!(d.code, 0, "{}\n{}", d.stdout, d.stderr);
    let run_id = d.run_id();
    let injected = |step: &str| {
        sb.events(&run_id)
            .into_iter()
            .any(|e| e["event"] == "step_succeeded" && e["step"] == step)
    };
    assert!(injected("delete_a_third") && injected("truncate_vectors"));
    assert_eq!(sb.outputs(&run_id, "restore_graph")["nodes"], 61);
    let ri = sb.outputs(&run_id, "restore_index");
    assert_eq!(ri["files"], 3);
    assert_eq!(ri["metadata"]["documents"], 30);
    assert_eq!(sb.outputs(&run_id, "cross_check")["rows"][0]["indexed"], 30);
    assert_eq!(
        std::fs::read(index.join("vectors/part-0.bin")).unwrap(),
        vectors
    );
    let kept = std::path::PathBuf::from(ri["previous"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(kept.join("vectors/part-0.bin"))
            .unwrap()
            .len(),
        0,
        "the corrupted index is kept beside it"
    );
    let md = std::fs::read_to_string(sb.path("drill.md")).unwrap();
    assert!(md.contains("RPO"), "{md}");
}
