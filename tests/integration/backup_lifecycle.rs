//! What happens to a backup after it is written, against real S3 gateways and PostgreSQL:
//! copied to a second bucket (server-side) and to a second S3 service (streamed), re-encrypted
//! to a new key, found by time, and pruned with its parts.

use crate::common;

use common::pg::{Cluster, PASSWORD};
use common::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use common::sandbox::{Sandbox, runbook};

fn identity() -> (String, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    (
        id.to_string().expose_secret().to_string(),
        id.to_public().to_string(),
    )
}

#[test]
fn a_backup_copied_to_another_region_and_rekeyed_restores_with_the_new_key_only() {
    let pg = Cluster::start();
    pg.psql("postgres", "create database orders");
    pg.psql(
        "orders",
        "create table orders(id int primary key, note text); insert into orders select g, md5(g::text) from generate_series(1, 5000) g",
    );
    let primary = S3Server::start(&["backups", "archive"]);
    let dr = S3Server::start(&["backups-dr"]);
    let (old_id, old_recipient) = identity();
    let (new_id, new_recipient) = identity();
    let sb = Sandbox::new();
    let connections = format!(
        "{}{}{}  db: {{postgres: {{url: \"{}\", password: \"{{{{ secrets.pg_password }}}}\"}}}}\n",
        primary.connection("backups", "backups"),
        primary.connection("archive", "archive"),
        dr.connection("dr", "backups-dr"),
        pg.url("postgres")
    );
    let head = format!(
        "secrets:\n  s3_key: {{env: LB_S3_KEY}}\n  s3_secret: {{env: LB_S3_SECRET}}\n  pg_password: {{env: LB_PG_PASSWORD}}\n  old_id: {{env: LB_OLD_ID}}\n  new_id: {{env: LB_NEW_ID}}\nconnections:\n{connections}steps:\n"
    );
    sb.write(
        "r.yaml",
        &runbook(
            "lifecycle",
            &format!(
                r#"{head}  - {{id: dump, action: postgres.backup, with: {{connection: db, database: orders, to: {{connection: backups, key: pg/1}}, encrypt: {{recipients: ["{old_recipient}"]}}, storage_class: STANDARD_IA}}}}
  - {{id: archive, action: s3.copy, needs: [dump], with: {{from: {{connection: backups, key: pg/1}}, to: {{connection: archive, key: kept/1}}}}}}
  - {{id: to_dr, action: s3.copy, needs: [dump], with: {{from: {{connection: backups, key: pg/1}}, to: {{connection: dr}}, storage_class: STANDARD_IA}}}}
  - {{id: rotate, action: backup.rekey, needs: [to_dr], with: {{from: {{connection: dr, key: pg/1}}, decrypt_with: "{{{{ secrets.old_id }}}}", to: {{recipients: ["{new_recipient}"]}}}}}}
  - {{id: old_key, action: postgres.restore, needs: [rotate], on_failure: continue, with: {{connection: db, database: refused, from: {{connection: dr, key: pg/1}}, decrypt_with: "{{{{ secrets.old_id }}}}"}}}}
  - {{id: new_key, action: postgres.restore, needs: [old_key], with: {{connection: db, database: orders_dr, from: {{connection: dr, key: pg/1}}, decrypt_with: "{{{{ secrets.new_id }}}}", count_tables: [orders]}}}}
  - {{id: from_archive, action: postgres.restore, needs: [archive], with: {{connection: db, database: orders_archive, from: {{connection: archive, key: kept/1}}, decrypt_with: "{{{{ secrets.old_id }}}}", count_tables: [orders]}}}}
  - {{id: listed, action: s3.list, needs: [new_key], with: {{connection: dr, prefix: pg/}}}}
"#
            ),
        ),
    );
    let r = sb.lifeboat_env(
        &["run", "r.yaml"],
        &[
            ("LB_S3_KEY", ACCESS_KEY),
            ("LB_S3_SECRET", SECRET_KEY),
            ("LB_PG_PASSWORD", PASSWORD),
            ("LB_OLD_ID", &old_id),
            ("LB_NEW_ID", &new_id),
        ],
    );
    assert_eq!(r.code, 0, "old_key fails and the run goes on: {}", r.stderr);
    let out = |s: &str| sb.outputs(&r.run_id(), s);
    assert_eq!(out("archive")["how"], "server-side");
    assert_eq!(out("to_dr")["how"], "streamed");
    assert_eq!(out("to_dr")["objects"], out("dump")["parts"]);
    assert_eq!(out("rotate")["objects"], out("dump")["parts"]);
    assert_ne!(out("rotate")["sha256"], out("dump")["sha256"]);
    assert_eq!(out("new_key")["counts"]["orders"], 5000);
    assert_eq!(out("from_archive")["counts"]["orders"], 5000);
    assert_eq!(
        pg.psql(
            "orders_dr",
            "select md5(string_agg(note, ',' order by id)) from orders"
        ),
        pg.psql(
            "orders",
            "select md5(string_agg(note, ',' order by id)) from orders"
        )
    );
    let events = sb.events(&r.run_id());
    let refused = events
        .iter()
        .find(|e| e["event"] == "step_failed" && e["step"] == "old_key")
        .unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(refused.contains("cannot decrypt"), "{refused}");
    // Nothing of the rotation is left beside the backup.
    let keys = out("listed")["keys"].to_string();
    assert!(!keys.contains(".rekeying"), "{keys}");
    let log = std::fs::read_to_string(sb.log_path(&r.run_id())).unwrap();
    assert!(!log.contains(&old_id) && !log.contains(&new_id));
}

#[test]
fn latest_and_retention_see_backups_not_what_lies_beside_them() {
    let srv = S3Server::start(&["backups"]);
    let sb = Sandbox::new();
    let manifest = |at: &str, parts: bool| {
        let mut m = format!("{{\\\"consistent_at\\\": \\\"{at}\\\", \\\"sha256\\\": \\\"00\\\"");
        if parts {
            m.push_str(", \\\"note\\\": \\\"parts\\\"");
        }
        m.push('}');
        m
    };
    let steps = format!(
        r#"  - {{id: p1, action: s3.put, with: {{connection: backups, key: pg/1, content: schema}}}}
  - {{id: p1a, action: s3.put, needs: [p1], with: {{connection: backups, key: pg/1.part0001, content: data}}}}
  - {{id: p1b, action: s3.put, needs: [p1a], with: {{connection: backups, key: pg/1.part0002, content: post}}}}
  - {{id: m1, action: s3.put, needs: [p1b], with: {{connection: backups, key: pg/1.manifest.json, content: "{m1}"}}}}
  - {{id: p2, action: s3.put, needs: [m1], with: {{connection: backups, key: pg/2, content: two}}}}
  - {{id: m2, action: s3.put, needs: [p2], with: {{connection: backups, key: pg/2.manifest.json, content: "{m2}"}}}}
  - {{id: legacy, action: s3.put, needs: [m2], with: {{connection: backups, key: pg/old.sql.gz.enc, content: old, storage_class: STANDARD_IA}}}}
  - {{id: sidecar, action: s3.put, needs: [legacy], with: {{connection: backups, key: pg/old.sql.gz.enc.sha256, content: "ab  old.sql.gz.enc"}}}}
  - {{id: newest, action: s3.latest, needs: [sidecar], with: {{connection: backups, prefix: pg/}}}}
  - {{id: before, action: s3.latest, needs: [sidecar], with: {{connection: backups, prefix: pg/, before: "2026-01-01T12:00:00Z"}}}}
  - {{id: too_early, action: s3.latest, needs: [sidecar], on_failure: continue, with: {{connection: backups, prefix: pg/, before: "2025-06-01T00:00:00Z"}}}}
  - {{id: prune, action: s3.retention, needs: [newest, before, too_early], with: {{connection: backups, prefix: pg/, keep_last: 1}}}}
  - {{id: left, action: s3.list, needs: [prune], with: {{connection: backups, prefix: pg/}}}}
"#,
        m1 = manifest("2026-01-01T00:00:00Z", true),
        m2 = manifest("2026-01-02T00:00:00Z", false),
    );
    sb.write(
        "r.yaml",
        &runbook(
            "around",
            &format!(
                "secrets:\n  s3_key: {{env: LB_S3_KEY}}\n  s3_secret: {{env: LB_S3_SECRET}}\nconnections:\n{}steps:\n{steps}",
                srv.connection("backups", "backups")
            ),
        ),
    );
    let r = sb.lifeboat_env(
        &["run", "r.yaml"],
        &[("LB_S3_KEY", ACCESS_KEY), ("LB_S3_SECRET", SECRET_KEY)],
    );
    assert_eq!(
        r.code, 0,
        "too_early fails and the run goes on: {}",
        r.stderr
    );
    let out = |s: &str| sb.outputs(&r.run_id(), s);
    assert_eq!(
        out("newest")["key"],
        "pg/old.sql.gz.enc",
        "the .sha256 written after it is not a backup"
    );
    assert_eq!(out("before")["key"], "pg/1");
    assert_eq!(out("before")["consistent_at"], "2026-01-01T00:00:00Z");
    assert!(
        sb.failure(&r.run_id())
            .contains("before 2025-06-01T00:00:00Z"),
        "{}",
        sb.failure(&r.run_id())
    );
    let deleted: Vec<String> = serde_json::from_value(out("prune")["deleted"].clone()).unwrap();
    for k in [
        "pg/1",
        "pg/1.part0001",
        "pg/1.part0002",
        "pg/1.manifest.json",
        "pg/2",
        "pg/2.manifest.json",
    ] {
        assert!(deleted.contains(&k.to_string()), "{k}: {deleted:?}");
    }
    assert_eq!(
        out("left")["keys"],
        serde_json::json!(["pg/old.sql.gz.enc", "pg/old.sql.gz.enc.sha256"])
    );
}

/// A backup in one object, as lifeboat wrote them before parts (made here with the stock tools,
/// byte for byte that format: pg_dump -Fc -Z0 | zstd | age, and its manifest), still restores,
/// in swap mode and in place.
#[test]
fn a_single_stream_backup_from_before_parts_still_restores() {
    let pg = Cluster::start();
    pg.psql("postgres", "create database orders");
    pg.psql(
        "orders",
        "create table orders(id int primary key); insert into orders select generate_series(1, 777)",
    );
    let srv = S3Server::start(&["backups"]);
    let (id, recipient) = identity();
    let sb = Sandbox::new();
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "set -e; /usr/lib/postgresql/15/bin/pg_dump -Fc -Z0 '{}' | zstd -q -1 | age -r {recipient} > old.dump.zst.age; sha256sum old.dump.zst.age | cut -d' ' -f1 > sha",
            pg.url("orders")
        ))
        .env("PGPASSWORD", PASSWORD)
        .current_dir(sb.dir.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let sha = sb.read("sha").trim().to_string();
    let manifest = format!(
        "{{\\\"format\\\": \\\"pg_dump custom\\\", \\\"compression\\\": \\\"zstd:1\\\", \\\"encryption\\\": \\\"age-x25519\\\", \\\"database\\\": \\\"orders\\\", \\\"consistent_at\\\": \\\"2026-11-01T00:00:00Z\\\", \\\"sha256\\\": \\\"{sha}\\\", \\\"verified\\\": true}}"
    );
    // The same backup, its manifest claiming a petabyte: no disk here has room for that.
    let huge = manifest.replace(
        "\\\"verified\\\": true",
        "\\\"verified\\\": true, \\\"database_size\\\": 1000000000000000",
    );
    assert_ne!(huge, manifest);
    sb.write(
        "r.yaml",
        &runbook(
            "old",
            &format!(
                r#"secrets:
  s3_key: {{env: LB_S3_KEY}}
  s3_secret: {{env: LB_S3_SECRET}}
  pg_password: {{env: LB_PG_PASSWORD}}
  identity: {{env: LB_ID}}
connections:
{}  db: {{postgres: {{url: "{}", password: "{{{{ secrets.pg_password }}}}"}}}}
steps:
  - {{id: up, action: s3.put, with: {{connection: backups, key: pg/old, file: old.dump.zst.age}}}}
  - {{id: m, action: s3.put, needs: [up], with: {{connection: backups, key: pg/old.manifest.json, content: "{manifest}"}}}}
  - {{id: swap, action: postgres.restore, needs: [m], with: {{connection: db, database: orders, from: {{connection: backups, key: pg/old}}, decrypt_with: "{{{{ secrets.identity }}}}", count_tables: [orders]}}}}
  - {{id: in_place, action: postgres.restore, needs: [swap], with: {{connection: db, database: orders, mode: in_place, from: {{connection: backups, key: pg/old}}, decrypt_with: "{{{{ secrets.identity }}}}", count_tables: [orders]}}}}
  - {{id: huge, action: s3.put, needs: [in_place], with: {{connection: backups, key: pg/old.manifest.json, content: "{huge}"}}}}
  - {{id: no_room, action: postgres.restore, needs: [huge], on_failure: continue, with: {{connection: db, database: orders, from: {{connection: backups, key: pg/old}}, decrypt_with: "{{{{ secrets.identity }}}}"}}}}
"#,
                srv.connection("backups", "backups"),
                pg.url("postgres")
            ),
        ),
    );
    let r = sb.lifeboat_env(
        &["run", "r.yaml"],
        &[
            ("LB_S3_KEY", ACCESS_KEY),
            ("LB_S3_SECRET", SECRET_KEY),
            ("LB_PG_PASSWORD", PASSWORD),
            ("LB_ID", &id),
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = |s: &str| sb.outputs(&r.run_id(), s);
    assert_eq!(out("swap")["counts"]["orders"], 777);
    assert_eq!(out("swap")["streams"], 1);
    assert_eq!(out("swap")["consistent_at"], "2026-11-01T00:00:00Z");
    assert_eq!(out("in_place")["counts"]["orders"], 777);
    assert_eq!(out("in_place")["kept_database"], serde_json::Value::Null);
    assert_eq!(pg.psql("orders", "select count(*) from orders"), "777");
    let events = sb.events(&r.run_id());
    let refused = events
        .iter()
        .find(|e| e["event"] == "step_failed" && e["step"] == "no_room")
        .unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        refused.contains("needs about 1000000000 MB") && refused.contains("nothing was changed"),
        "{refused}"
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "select count(*) from pg_database where datname like 'orders__%'"
        ),
        "1",
        "only the swap's kept database; nothing was created for the refused restore"
    );
}
