//! The S3 actions against a real SeaweedFS S3 gateway (scripts/s3-server), with enforced
//! credentials and server-verified checksums.

use crate::common;

use common::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use common::sandbox::{Sandbox, runbook};

fn s3_runbook(name: &str, srv: &S3Server, steps: &str) -> String {
    runbook(
        name,
        &format!(
            "secrets:\n  s3_key: {{env: LB_S3_KEY}}\n  s3_secret: {{env: LB_S3_SECRET}}\nconnections:\n{}steps:\n{steps}",
            srv.connection("backups", "backups")
        ),
    )
}

fn run(sb: &Sandbox, args: &[&str]) -> common::sandbox::Ran {
    sb.lifeboat_env(
        args,
        &[("LB_S3_KEY", ACCESS_KEY), ("LB_S3_SECRET", SECRET_KEY)],
    )
}

#[test]
fn put_list_latest_get_and_delete_round_trip() {
    let srv = S3Server::start(&["backups"]);
    let sb = Sandbox::new();
    sb.write("dump.bin", &"x".repeat(100_000));
    sb.write("r.yaml", &s3_runbook("s3", &srv, r#"
  - {id: old, action: s3.put, with: {connection: backups, key: "pg/orders/2026-01-01.dump", content: "old backup"}}
  - {id: old_manifest, action: s3.put, needs: [old], with: {connection: backups, key: "pg/orders/2026-01-01.dump.manifest.json", content: '{"verified": true}'}}
  - {id: new, action: s3.put, needs: [old_manifest], with: {connection: backups, key: "pg/orders/2026-01-02.dump", file: dump.bin}}
  - id: once
    action: s3.put
    needs: [new]
    with: {connection: backups, key: "pg/orders/2026-01-02.dump", content: "clobber", if_absent: true}
    on_failure: continue
  - {id: list, action: s3.list, needs: [once], with: {connection: backups, prefix: "pg/orders/"}}
  - {id: newest, action: s3.latest, needs: [list], with: {connection: backups, prefix: "pg/orders/"}}
  - {id: newest_verified, action: s3.latest, needs: [list], with: {connection: backups, prefix: "pg/orders/", verified_only: true}}
  - {id: fetch, action: s3.get, needs: [newest], with: {connection: backups, key: "{{ steps.newest.outputs.key }}", to: fetched.bin}}
  - id: same
    action: shell
    needs: [fetch]
    with: {argv: [cmp, dump.bin, fetched.bin], changes: false}
    assert: "steps.fetch.outputs.sha256 == steps.new.outputs.sha256"
  - {id: clean, action: s3.delete, needs: [same, newest_verified], with: {connection: backups, keys: ["{{ steps.newest.outputs.key }}"]}}
  - {id: after, action: s3.list, needs: [clean], with: {connection: backups, prefix: "pg/orders/"}}
"#));
    let r = run(&sb, &["run", "r.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let events = sb.events(&r.run_id());
    let out = |s: &str| sb.outputs(&r.run_id(), s);
    assert_eq!(out("new")["size"], 100_000);
    let refused = events
        .iter()
        .find(|e| e["event"] == "step_failed" && e["step"] == "once")
        .unwrap();
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("PreconditionFailed"),
        "{refused}"
    );
    assert_eq!(out("list")["count"], 3);
    assert_eq!(out("newest")["key"], "pg/orders/2026-01-02.dump");
    assert_eq!(out("newest_verified")["key"], "pg/orders/2026-01-01.dump");
    assert_eq!(out("newest_verified")["manifest"]["verified"], true);
    assert_eq!(
        out("after")["keys"],
        serde_json::json!([
            "pg/orders/2026-01-01.dump",
            "pg/orders/2026-01-01.dump.manifest.json"
        ])
    );
    let log = std::fs::read_to_string(sb.log_path(&r.run_id())).unwrap();
    assert!(!log.contains(SECRET_KEY));
}

#[test]
fn wrong_credentials_and_missing_buckets_fail_at_once_in_words() {
    let srv = S3Server::start(&["backups"]);
    let sb = Sandbox::new();
    sb.write("r.yaml", &s3_runbook("creds", &srv, "  - {id: l, action: s3.list, with: {connection: backups}, retry: {attempts: 3, delay: 10ms}}\n"));
    let r = sb.lifeboat_env(
        &["run", "r.yaml"],
        &[
            ("LB_S3_KEY", ACCESS_KEY),
            ("LB_S3_SECRET", "not-the-secret-key"),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let trace = sb.trace(&r.run_id());
    assert_eq!(
        trace.iter().filter(|t| *t == "step_started:l").count(),
        1,
        "{trace:?}"
    );
    let failure = sb.failure(&r.run_id());
    assert!(failure.contains("SignatureDoesNotMatch"), "{failure}");

    let missing = s3_runbook("nobucket", &srv, "  - {id: l, action: s3.list, with: {connection: backups}, retry: {attempts: 3, delay: 10ms}}\n")
        .replace("bucket: backups", "bucket: no-such-bucket");
    sb.write("missing.yaml", &missing);
    let r = run(&sb, &["run", "missing.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let trace = sb.trace(&r.run_id());
    assert_eq!(
        trace.iter().filter(|t| *t == "step_started:l").count(),
        1,
        "{trace:?}"
    );
    let failure = sb.failure(&r.run_id());
    assert!(failure.contains("NoSuchBucket"), "{failure}");
}

#[test]
fn retention_dry_run_lists_exactly_what_the_real_run_deletes() {
    let srv = S3Server::start(&["backups"]);
    let sb = Sandbox::new();
    let mut steps = String::new();
    for i in 0..5 {
        let needs = if i > 0 {
            format!(", needs: [put{}]", i - 1)
        } else {
            String::new()
        };
        steps.push_str(&format!("  - {{id: put{i}, action: s3.put{needs}, with: {{connection: backups, key: \"pg/b{i}.dump\", content: \"{i}\"}}}}\n"));
        steps.push_str(&format!("  - {{id: man{i}, action: s3.put, needs: [put{i}], with: {{connection: backups, key: \"pg/b{i}.dump.manifest.json\", content: \"{{}}\"}}}}\n"));
    }
    steps.push_str("  - {id: plan, action: s3.retention, needs: [put4, man4, man3, man2, man1, man0], with: {connection: backups, prefix: pg/, keep_last: 2, dry_run: true}}\n");
    steps.push_str("  - {id: prune, action: s3.retention, needs: [plan], with: {connection: backups, prefix: pg/, keep_last: 2}}\n");
    steps.push_str("  - {id: left, action: s3.list, needs: [prune], with: {connection: backups, prefix: pg/}}\n");
    sb.write("r.yaml", &s3_runbook("gfs", &srv, &steps));
    let r = run(&sb, &["run", "r.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = |s: &str| sb.outputs(&r.run_id(), s);
    let would: Vec<String> = serde_json::from_value(out("plan")["would_delete"].clone()).unwrap();
    assert_eq!(would.len(), 3, "{would:?}");
    let deleted: Vec<String> = serde_json::from_value(out("prune")["deleted"].clone()).unwrap();
    for k in &would {
        assert!(
            deleted.contains(k) && deleted.contains(&format!("{k}.manifest.json")),
            "{deleted:?}"
        );
    }
    assert_eq!(
        out("left")["count"],
        4,
        "two backups and their manifests remain"
    );
}

mod backups {
    use super::*;
    use common::kube::{FakeKubelet, KubeServer};
    use common::pg::{Cluster, PASSWORD};

    fn pg_s3_runbook(name: &str, pg: &Cluster, srv: &S3Server, steps: &str) -> String {
        runbook(
            name,
            &format!(
                "secrets:\n  s3_key: {{env: LB_S3_KEY}}\n  s3_secret: {{env: LB_S3_SECRET}}\n  pg_password: {{env: LB_PG_PASSWORD}}\n  identity: {{env: LB_AGE_IDENTITY}}\n  passphrase: {{env: LB_PASSPHRASE}}\nconnections:\n{}  db: {{postgres: {{url: \"{}\", password: \"{{{{ secrets.pg_password }}}}\"}}}}\nsteps:\n{steps}",
                srv.connection("backups", "backups"),
                pg.url("postgres")
            ),
        )
    }

    fn env(identity: &str) -> Vec<(&'static str, String)> {
        vec![
            ("LB_S3_KEY", ACCESS_KEY.to_string()),
            ("LB_S3_SECRET", SECRET_KEY.to_string()),
            ("LB_PG_PASSWORD", PASSWORD.to_string()),
            ("LB_AGE_IDENTITY", identity.to_string()),
            (
                "LB_PASSPHRASE",
                "correct horse battery staple 42".to_string(),
            ),
        ]
    }

    fn run_env(
        sb: &Sandbox,
        args: &[&str],
        env: &[(&'static str, String)],
    ) -> common::sandbox::Ran {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sb.lifeboat_env(args, &pairs)
    }

    fn identity() -> (String, String) {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        (
            format!("# created by a test\n{}\n", id.to_string().expose_secret()),
            id.to_public().to_string(),
        )
    }

    #[test]
    fn streamed_encrypted_backup_restores_only_when_verified_and_opened() {
        let pg = Cluster::start();
        pg.psql("postgres", "create database orders");
        pg.psql("orders", "create table orders(id int primary key, note text); insert into orders select g, repeat('n', 50) || g from generate_series(1, 20000) g");
        let srv = S3Server::start(&["backups"]);
        let (id, recipient) = identity();
        let sb = Sandbox::new();
        sb.write("r.yaml", &pg_s3_runbook("pipeline", &pg, &srv, &format!(r#"
  - id: dump
    action: postgres.backup
    with: {{connection: db, database: orders, to: {{connection: backups, key: pg/orders/1.dump.zst.age}}, encrypt: {{recipients: ["{recipient}"]}}}}
  - id: dump_pw
    action: postgres.backup
    needs: [dump]
    with: {{connection: db, database: orders, to: {{connection: backups, key: pg/orders/2.dump.zst.age}}, encrypt: {{passphrase: "{{{{ secrets.passphrase }}}}"}}, compression_level: 9}}
  - id: restore
    action: postgres.restore
    needs: [dump_pw]
    with: {{connection: db, database: orders_copy, from: {{connection: backups, key: pg/orders/1.dump.zst.age}}, decrypt_with: "{{{{ secrets.identity }}}}", jobs: 2, count_tables: [orders]}}
  - id: restore_pw
    action: postgres.restore
    needs: [restore]
    with: {{connection: db, database: orders_pw, from: {{connection: backups, key: pg/orders/2.dump.zst.age}}, decrypt_with: "{{{{ secrets.passphrase }}}}", count_tables: [orders]}}
"#)));
        let r = run_env(&sb, &["run", "r.yaml"], &env(&id));
        assert_eq!(r.code, 0, "{}", r.stderr);
        let out = |s: &str| sb.outputs(&r.run_id(), s);
        assert_eq!(out("restore")["counts"]["orders"], 20000);
        assert_eq!(out("restore_pw")["counts"]["orders"], 20000);
        assert_eq!(out("restore")["sha256"], out("dump")["sha256"]);
        assert!(out("dump")["lsn"].as_str().unwrap().contains('/'));
        assert_eq!(
            pg.psql("orders_copy", "select count(*), sum(id) from orders"),
            "20000|200010000"
        );
        let log = std::fs::read_to_string(sb.log_path(&r.run_id())).unwrap();
        assert!(
            !log.contains("AGE-SECRET-KEY") && !log.contains("battery staple"),
            "secrets stay out of the log"
        );

        // A corrupted object, the wrong key, or no key: refused before the target is touched.
        pg.psql("postgres", "create database target");
        pg.psql(
            "target",
            "create table sentinel(x int); insert into sentinel values (1)",
        );
        let (other_id, _) = identity();
        sb.write("bad.yaml", &pg_s3_runbook("bad", &pg, &srv, r#"
  - id: wrong_key
    action: postgres.restore
    with: {connection: db, database: target, from: {connection: backups, key: pg/orders/1.dump.zst.age}, decrypt_with: "{{ secrets.identity }}"}
    on_failure: continue
  - id: no_key
    action: postgres.restore
    needs: [wrong_key]
    with: {connection: db, database: target, from: {connection: backups, key: pg/orders/1.dump.zst.age}}
    on_failure: continue
  - id: corrupt
    action: s3.put
    needs: [no_key]
    with: {connection: backups, key: pg/orders/1.dump.zst.age, content: "not the backup at all"}
  - id: after_corruption
    action: postgres.restore
    needs: [corrupt]
    with: {connection: db, database: target, from: {connection: backups, key: pg/orders/1.dump.zst.age}, decrypt_with: "{{ secrets.identity }}"}
"#));
        let r = run_env(&sb, &["run", "bad.yaml"], &env(&other_id));
        assert_eq!(r.code, 1, "{}", r.stderr);
        let events = sb.events(&r.run_id());
        let err = |s: &str| {
            events
                .iter()
                .find(|e| e["event"] == "step_failed" && e["step"] == s)
                .unwrap()["error"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert!(
            err("wrong_key").contains("cannot decrypt")
                && err("wrong_key").contains("nothing was restored"),
            "{}",
            err("wrong_key")
        );
        assert!(
            err("no_key").contains("give `decrypt_with`"),
            "{}",
            err("no_key")
        );
        assert!(
            err("after_corruption").contains("nothing was restored"),
            "{}",
            err("after_corruption")
        );
        assert_eq!(
            pg.psql("target", "select count(*) from sentinel"),
            "1",
            "the target was not touched"
        );
    }

    /// During a disaster lifeboat may not be at hand: a backup opens with the stock `age` and
    /// `zstd` CLIs, and pg_restore reads the result.
    #[test]
    fn a_backup_opens_with_the_stock_age_and_zstd_clis() {
        let pg = Cluster::start();
        pg.psql(
            "postgres",
            "create table t(x int); insert into t values (7)",
        );
        let srv = S3Server::start(&["backups"]);
        let (id, recipient) = identity();
        let sb = Sandbox::new();
        sb.write("key.txt", &id);
        sb.write("r.yaml", &pg_s3_runbook("cli", &pg, &srv, &format!(r#"
  - id: dump
    action: postgres.backup
    with: {{connection: db, to: {{connection: backups, key: b.dump.zst.age}}, encrypt: {{recipients: ["{recipient}"]}}}}
  - {{id: pre, action: s3.get, needs: [dump], with: {{connection: backups, key: b.dump.zst.age, to: pre.age}}}}
  - {{id: data, action: s3.get, needs: [dump], with: {{connection: backups, key: b.dump.zst.age.part0001, to: data.age}}}}
  - {{id: post, action: s3.get, needs: [dump], with: {{connection: backups, key: b.dump.zst.age.part0002, to: post.age}}}}
"#)));
        let r = run_env(&sb, &["run", "r.yaml"], &env(&id));
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(sb.outputs(&r.run_id(), "dump")["parts"], 3);
        // The commands docs/s3-backups.md gives, as they are written there.
        let url = pg.url("opened");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "set -e; B=/usr/lib/postgresql/15/bin; \
                 $B/createdb -T template0 --maintenance-db='{}' opened; \
                 age -d -i key.txt pre.age | zstd -d | $B/pg_restore --exit-on-error -d '{url}'; \
                 age -d -i key.txt data.age | zstd -d | $B/psql -v ON_ERROR_STOP=1 -q -d '{url}'; \
                 age -d -i key.txt post.age | zstd -d > post.dump; \
                 $B/pg_restore --exit-on-error -j 4 -d '{url}' post.dump",
                pg.url("postgres")
            ))
            .env("PGPASSWORD", PASSWORD)
            .current_dir(sb.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(pg.psql("opened", "select x from t"), "7");
    }

    fn shipped(name: &str) -> String {
        common::root()
            .join("runbooks")
            .join(name)
            .display()
            .to_string()
    }

    /// runbooks/postgres-backup.yaml then runbooks/postgres-restore.yaml, against real PostgreSQL
    /// and S3, with the run history in the folder store or in PostgreSQL; with `kube`, writers
    /// are stopped by scaling their Deployment on a real API server instead of in PostgreSQL.
    fn backup_then_restore(on_postgres: bool, kube: bool) {
        let pg = Cluster::start();
        pg.psql("postgres", "create role app_rw login password 'rw-Pw-77x'");
        pg.psql("postgres", "create database orders");
        pg.psql("orders", "create table orders(id int primary key, total numeric); insert into orders select g, g * 1.5 from generate_series(1, 100) g; grant all on orders to app_rw");
        let st = if on_postgres {
            pg.psql("postgres", "create database lifeboat_state");
            format!("postgres://postgres@127.0.0.1:{}/lifeboat_state", pg.port)
        } else {
            ".lifeboat".to_string()
        };
        let srv = S3Server::start(&["backups", "backups-dr"]);
        let (id, recipient) = identity();
        let sb = Sandbox::new();
        // The backup gets no identity: it needs only the recipient.
        let env = [
            ("PGPASSWORD", PASSWORD),
            ("LIFEBOAT_S3_ACCESS_KEY", ACCESS_KEY),
            ("LIFEBOAT_S3_SECRET_KEY", SECRET_KEY),
        ];
        let with_id = [
            ("PGPASSWORD", PASSWORD),
            ("LIFEBOAT_S3_ACCESS_KEY", ACCESS_KEY),
            ("LIFEBOAT_S3_SECRET_KEY", SECRET_KEY),
            ("BACKUP_AGE_IDENTITY", id.as_str()),
        ];
        let pg_url = format!("pg_url=postgres://postgres@127.0.0.1:{}", pg.port);
        let endpoint = format!("s3_endpoint={}", srv.endpoint);
        let recipient = format!("age_recipient={recipient}");
        let common: Vec<&str> = vec![
            "-p",
            &pg_url,
            "-p",
            "s3_bucket=backups",
            "-p",
            &endpoint,
            "-p",
            "s3_path_style=true",
            "--state",
            &st,
        ];
        // A second region: another bucket (of the same test server, so copied server-side).
        let dr_endpoint = format!("dr_s3_endpoint={}", srv.endpoint);
        let mut args = vec![
            "run",
            "BACKUP",
            "-p",
            &recipient,
            "-p",
            "dr_s3_bucket=backups-dr",
            "-p",
            &dr_endpoint,
            "-p",
            "dr_region=us-east-1",
        ];
        let backup = shipped("postgres-backup.yaml");
        args[1] = &backup;
        args.extend(&common);
        let r = sb.lifeboat_env(&args, &env);
        assert_eq!(r.code, 0, "{}", r.stderr);
        if !on_postgres {
            let copied = sb.outputs(&r.run_id(), "to_second_region");
            assert_eq!(copied["how"], "server-side", "{copied}");
            assert!(copied["objects"].as_u64().unwrap() >= 3, "{copied}");
        }
        // The weekly validation, with the identity, marks it verified for the restore to find.
        let validate = shipped("postgres-validate-backups.yaml");
        let verify_url = format!("verify_pg_url=postgres://postgres@127.0.0.1:{}", pg.port);
        let mut args = vec![
            "run",
            validate.as_str(),
            "-p",
            &verify_url,
            "-p",
            "min_orders=100",
        ];
        args.extend(&common[2..]);
        let mut venv = with_id.to_vec();
        venv.push(("VERIFY_PGPASSWORD", PASSWORD));
        let r = sb.lifeboat_env(&args, &venv);
        assert_eq!(r.code, 0, "{}", r.stderr);

        // The incident: most of the data is gone.
        pg.psql("orders", "delete from orders where id > 3");
        let restore = shipped("postgres-restore.yaml");
        let mut args = vec!["run", restore.as_str(), "-p", "min_orders=100"];
        args.extend(&common);
        let cluster = kube.then(|| {
            let k = KubeServer::start();
            k.namespace("orders");
            let kubelet = FakeKubelet::start(&k, &["orders"]);
            k.apply(&[k.deployment("orders", "orders-api", 3)]);
            (k, kubelet)
        });
        let kube_args = cluster.as_ref().map(|(k, _)| {
            [
                "writers=kubernetes".to_string(),
                format!("kubeconfig={}", k.kubeconfig.display()),
                "kube_context=admin".to_string(),
                "writer_namespace=orders".to_string(),
            ]
        });
        for a in kube_args.iter().flatten() {
            args.extend(["-p", a.as_str()]);
        }
        let r = sb.lifeboat_env(&args, &with_id);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(
            pg.psql("orders", "select count(*), sum(total) from orders"),
            "100|7575.0"
        );
        if let Some((k, _)) = &cluster {
            let ev = sb.events(&r.run_id());
            let out = |s: &str| {
                ev.iter()
                    .find(|e| e["event"] == "step_succeeded" && e["step"] == s)
                    .unwrap_or_else(|| panic!("{s} did not succeed"))
                    .clone()
            };
            assert_eq!(out("scale_down_writers")["outputs"]["previous_replicas"], 3);
            assert_eq!(out("scale_up_writers")["outputs"]["ready_replicas"], 3);
            assert!(
                ev.iter()
                    .any(|e| e["event"] == "step_skipped" && e["step"] == "stop_writers"),
                "the PostgreSQL way was skipped"
            );
            let d = k.read("orders", "Deployment", "orders-api");
            assert_eq!(
                (
                    d["spec"]["replicas"].clone(),
                    d["status"]["availableReplicas"].clone()
                ),
                (3.into(), 3.into())
            );
        }
        assert_eq!(
            pg.psql_as(
                "app_rw",
                "rw-Pw-77x",
                "orders",
                "insert into orders values (101, 1)"
            ),
            Ok(String::new())
        );
        let runs = sb.lifeboat_env(&["runs", "--json", "--state", &st], &env);
        let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
        let names: Vec<&str> = runs
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["runbook"].as_str())
            .collect();
        assert!(
            names.contains(&"postgres-backup") && names.contains(&"postgres-restore"),
            "{runs}"
        );
    }

    #[test]
    fn shipped_backup_and_restore_on_the_folder_store() {
        backup_then_restore(false, false);
    }

    /// The Kubernetes variant of stopping writers, against a real kube-apiserver.
    #[test]
    fn shipped_restore_scales_the_writer_deployment_down_and_back() {
        backup_then_restore(false, true);
    }

    #[test]
    fn shipped_backup_and_restore_on_the_postgres_store() {
        backup_then_restore(true, false);
    }

    /// Teams migrate from the shell scripts lifeboat replaces: their backups restore as they are.
    #[test]
    fn legacy_gzip_openssl_backups_restore_custom_and_plain_sql() {
        let pg = Cluster::start();
        pg.psql("postgres", "create database orders");
        pg.psql("orders", "create table orders(id int primary key); insert into orders select generate_series(1, 321)");
        let srv = S3Server::start(&["backups"]);
        let sb = Sandbox::new();
        let url = pg.url("orders");
        // Exactly what the old scripts ran.
        let script = format!(
            "set -e; export PGPASSWORD='{PASSWORD}'; \
             /usr/lib/postgresql/15/bin/pg_dump -Fc '{url}' | gzip | openssl enc -aes-256-cbc -salt -pbkdf2 -iter 100000 -pass pass:legacy-Pass-9 > custom.enc; \
             /usr/lib/postgresql/15/bin/pg_dump '{url}' | gzip | openssl enc -aes-256-cbc -salt -pbkdf2 -iter 100000 -pass pass:legacy-Pass-9 > plain.enc; \
             sha256sum custom.enc > custom.enc.sha256; sha256sum plain.enc > plain.enc.sha256"
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .current_dir(sb.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        sb.write("r.yaml", &pg_s3_runbook("legacy", &pg, &srv, r#"
  - {id: up1, action: s3.put, with: {connection: backups, key: old/custom.enc, file: custom.enc}}
  - {id: up2, action: s3.put, needs: [up1], with: {connection: backups, key: old/custom.enc.sha256, file: custom.enc.sha256}}
  - {id: up3, action: s3.put, needs: [up2], with: {connection: backups, key: old/plain.enc, file: plain.enc}}
  - {id: up4, action: s3.put, needs: [up3], with: {connection: backups, key: old/plain.enc.sha256, file: plain.enc.sha256}}
  - id: custom
    action: postgres.restore
    needs: [up4]
    with: {connection: db, database: from_custom, from: {connection: backups, key: old/custom.enc}, decrypt_with: "{{ secrets.passphrase }}", count_tables: [orders]}
  - id: plain
    action: postgres.restore
    needs: [custom]
    with: {connection: db, database: from_plain, from: {connection: backups, key: old/plain.enc}, decrypt_with: "{{ secrets.passphrase }}", count_tables: [orders]}
"#));
        let mut e = env("unused");
        e.retain(|(k, _)| *k != "LB_PASSPHRASE");
        e.push(("LB_PASSPHRASE", "legacy-Pass-9".to_string()));
        let r = run_env(&sb, &["run", "r.yaml"], &e);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(pg.psql("from_custom", "select count(*) from orders"), "321");
        assert_eq!(pg.psql("from_plain", "select count(*) from orders"), "321");
        // The wrong passphrase is refused before anything is touched.
        let mut e = env("unused");
        e.retain(|(k, _)| *k != "LB_PASSPHRASE");
        e.push(("LB_PASSPHRASE", "not-the-pass".to_string()));
        sb.write("bad.yaml", &pg_s3_runbook("bad", &pg, &srv, r#"
  - {id: custom, action: postgres.restore, with: {connection: db, database: never_made, from: {connection: backups, key: old/custom.enc}, decrypt_with: "{{ secrets.passphrase }}"}}
"#));
        let r = run_env(&sb, &["run", "bad.yaml"], &e);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(r.stderr.contains("nothing was restored"), "{}", r.stderr);
        assert_eq!(
            pg.psql(
                "postgres",
                "select count(*) from pg_database where datname = 'never_made'"
            ),
            "0"
        );
    }
}
