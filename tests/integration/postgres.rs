//! The PostgreSQL actions against real throwaway clusters (scripts/pg-cluster).

use crate::common;

use common::pg::{Cluster, PASSWORD};
use common::sandbox::{Sandbox, runbook};

fn pg_runbook(name: &str, pg: &Cluster, db: &str, steps: &str) -> String {
    runbook(
        name,
        &format!(
            "secrets:\n  pg_password: {{env: LB_PG_PASSWORD}}\nconnections:\n  db: {{postgres: {{url: \"{}\", password: \"{{{{ secrets.pg_password }}}}\"}}}}\nsteps:\n{steps}",
            pg.url(db)
        ),
    )
}

fn run(sb: &Sandbox, args: &[&str]) -> common::sandbox::Ran {
    sb.lifeboat_env(args, &[("LB_PG_PASSWORD", PASSWORD)])
}

#[test]
fn query_returns_typed_rows_read_only_unless_it_writes() {
    let pg = Cluster::start();
    pg.psql("postgres", "create table orders(id int primary key, total numeric(10,2), note text, placed timestamptz default '2026-01-02 03:04:05+00', meta jsonb)");
    pg.psql("postgres", "insert into orders values (1, 10.50, 'a', default, '{\"vip\": true}'), (2, 3, null, default, null)");
    let sb = Sandbox::new();
    sb.write("r.yaml", &pg_runbook("q", &pg, "postgres", r#"
  - id: count
    action: postgres.query
    with: {connection: db, sql: "select count(*) as n, sum(total) as total from orders where id >= $1", params: [1]}
    assert: "outputs.rows[0].n == 2"
  - id: rows
    action: postgres.query
    needs: [count]
    with: {connection: db, sql: "select id, total, note, placed, meta from orders order by id"}
  - id: sneaky_write
    action: postgres.query
    needs: [rows]
    with: {connection: db, sql: "delete from orders"}
    on_failure: continue
  - id: real_write
    action: postgres.query
    needs: [sneaky_write]
    with: {connection: db, sql: "insert into orders(id, total) values ($1, $2)", params: [3, 1.25], writes: true}
"#));
    let r = run(&sb, &["run", "r.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let events = sb.events(&r.run_id());
    let out = |step: &str| sb.outputs(&r.run_id(), step);
    assert_eq!(out("count")["rows"][0]["n"], 2);
    assert_eq!(out("count")["rows"][0]["total"], 13.5);
    let rows = out("rows")["rows"].clone();
    assert_eq!(
        rows[0],
        serde_json::json!({"id": 1, "total": 10.5, "note": "a", "placed": "2026-01-02T03:04:05Z", "meta": {"vip": true}})
    );
    assert_eq!(rows[1]["note"], serde_json::Value::Null);
    let sneaky = events
        .iter()
        .find(|e| e["event"] == "step_failed" && e["step"] == "sneaky_write")
        .unwrap();
    assert!(
        sneaky["error"]
            .as_str()
            .unwrap()
            .contains("read-only transaction"),
        "{sneaky}"
    );
    assert_eq!(out("real_write")["row_count"], 1);
    assert_eq!(pg.psql("postgres", "select count(*) from orders"), "3");
    let log = std::fs::read_to_string(sb.log_path(&r.run_id())).unwrap();
    assert!(!log.contains(PASSWORD));
}

/// `-v` shows what the client libraries say (here tokio-postgres, through the `log` bridge),
/// under the attempt they belong to, and masks the secrets they log: tokio-postgres logs every
/// statement's parameters at debug.
#[test]
fn verbose_shows_the_clients_diagnostics_with_secrets_masked() {
    let pg = Cluster::start();
    let sb = Sandbox::new();
    sb.write("r.yaml", &pg_runbook("verbose", &pg, "postgres", "  - {id: q, action: postgres.query, with: {connection: db, sql: 'select length($1::text) as n', params: [\"{{ secrets.pg_password }}\"]}}\n"));
    let r = sb.lifeboat_env(&["run", "r.yaml", "-vv"], &[("LB_PG_PASSWORD", PASSWORD)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let statement = r
        .stderr
        .lines()
        .find(|l| l.contains("executing statement") && l.contains("with parameters"))
        .unwrap_or_else(|| panic!("tokio-postgres's debug line is shown: {}", r.stderr));
    assert!(statement.contains("attempt{step=q n=1}"), "{statement}");
    assert!(statement.contains("***"), "{statement}");
    assert!(!r.stderr.contains(PASSWORD), "{}", r.stderr);
    assert_eq!(sb.outputs(&r.run_id(), "q")["rows"][0]["n"], PASSWORD.len());

    // RUST_LOG chooses; without it or -v, stderr is only the reporter's.
    let r = sb.lifeboat_env(
        &["run", "r.yaml"],
        &[
            ("LB_PG_PASSWORD", PASSWORD),
            ("RUST_LOG", "tokio_postgres=debug"),
        ],
    );
    assert!(r.stderr.contains("executing statement"), "{}", r.stderr);
    assert!(!r.stderr.contains(PASSWORD));
    let r = run(&sb, &["run", "r.yaml"]);
    assert!(!r.stderr.contains("executing statement"), "{}", r.stderr);
    assert!(!r.stderr.contains("DEBUG"), "{}", r.stderr);
}

#[test]
fn a_wrong_password_fails_at_once_and_a_dead_server_is_retried() {
    let pg = Cluster::start();
    let sb = Sandbox::new();
    sb.write("r.yaml", &pg_runbook("auth", &pg, "postgres", "  - {id: q, action: postgres.query, with: {connection: db, sql: 'select 1'}, retry: {attempts: 3, delay: 10ms}}\n"));
    let r = sb.lifeboat_env(&["run", "r.yaml"], &[("LB_PG_PASSWORD", "wrong-Zr4-qq81")]);
    assert_eq!(r.code, 1);
    let trace = sb.trace(&r.run_id());
    assert_eq!(
        trace.iter().filter(|t| *t == "step_started:q").count(),
        1,
        "{trace:?}"
    );
    let events = sb.events(&r.run_id());
    let failed = events.iter().find(|e| e["event"] == "step_failed").unwrap();
    let failure = failed["error"].as_str().unwrap_or_default();
    assert!(
        failure.contains("password authentication failed"),
        "{failed}"
    );
    drop(pg);
    let r = run(&sb, &["run", "r.yaml"]);
    assert_eq!(r.code, 1);
    let trace = sb.trace(&r.run_id());
    assert_eq!(
        trace.iter().filter(|t| *t == "step_started:q").count(),
        3,
        "{trace:?}"
    );
}

/// Issue 4: prove that a writer is really blocked, and that resume_writers (and the compensate
/// of stop_writers) restore exactly the prior state.
#[test]
fn stop_writers_blocks_a_real_writer_and_resume_restores_exactly_the_prior_state() {
    let pg = Cluster::start();
    pg.psql("postgres", "create role app_rw login password 'rw-Pw-77x'; create role reporting login password 'rep-Pw-88y'");
    pg.psql("postgres", "create database orders");
    pg.psql("orders", "create table orders(id serial primary key, n int); grant all on orders, orders_id_seq to app_rw");
    // A non-default ACL before, to see it restored exactly: reporting has CONNECT explicitly.
    pg.psql("postgres", "grant connect on database orders to reporting");
    let acl_before = pg.psql(
        "postgres",
        "select datacl::text from pg_database where datname = 'orders'",
    );
    assert_eq!(
        pg.psql_as(
            "app_rw",
            "rw-Pw-77x",
            "orders",
            "insert into orders(n) values (1)"
        ),
        Ok(String::new())
    );

    // A writer in the middle of a transaction when the writers are stopped.
    let mut open_writer = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "app_rw",
            "-d",
            "orders",
            "-c",
            "begin; insert into orders(n) values (2); select pg_sleep(60); commit;",
        ])
        .env("PGPASSWORD", "rw-Pw-77x")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    pg.wait_for("postgres", "select count(*) from pg_stat_activity where usename = 'app_rw' and backend_xid is not null", "1", 200);

    let sb = Sandbox::new();
    sb.write(
        "stop.yaml",
        &pg_runbook(
            "stop",
            &pg,
            "postgres",
            r#"
  - id: stop
    action: postgres.stop_writers
    with: {connection: db, database: orders, roles: [app_rw]}
    timeout: 30s
"#,
        ),
    );
    let r = run(&sb, &["run", "stop.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let events = sb.events(&r.run_id());
    let out = events
        .iter()
        .find(|e| e["event"] == "step_succeeded")
        .unwrap()["outputs"]
        .clone();
    assert_eq!(out["terminated"], 1);
    assert_eq!(
        out["prior_state"],
        serde_json::json!({"database": "orders", "read_only": null, "connect": ["PUBLIC"]})
    );
    let status = open_writer.wait().unwrap();
    assert!(!status.success(), "the open writer was terminated");

    // The writer cannot come back; the uncommitted insert is gone; a new session is read-only.
    let denied = pg
        .psql_as(
            "app_rw",
            "rw-Pw-77x",
            "orders",
            "insert into orders(n) values (3)",
        )
        .unwrap_err();
    assert!(
        denied.contains("permission denied for database"),
        "{denied}"
    );
    let read_only = pg
        .psql_as(
            "reporting",
            "rep-Pw-88y",
            "orders",
            "create temp table t(x int); insert into t values (1)",
        )
        .unwrap_err();
    assert!(read_only.contains("read-only transaction"), "{read_only}");
    assert_eq!(
        pg.psql(
            "orders",
            "set default_transaction_read_only = off; select count(*) from orders"
        ),
        "1"
    );

    sb.write(
        "resume.yaml",
        &pg_runbook(
            "resume",
            &pg,
            "postgres",
            &format!(
                r#"
  - id: resume
    action: postgres.resume_writers
    with: {{connection: db, prior_state: {}}}
"#,
                out["prior_state"]
            ),
        ),
    );
    let r = run(&sb, &["run", "resume.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        pg.psql_as(
            "app_rw",
            "rw-Pw-77x",
            "orders",
            "insert into orders(n) values (4)"
        ),
        Ok(String::new())
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "select datacl::text from pg_database where datname = 'orders'"
        ),
        acl_before
    );
    assert_eq!(pg.psql("postgres", "select count(*) from pg_db_role_setting r join pg_database d on d.oid = r.setdatabase where d.datname = 'orders'"), "0");
}

#[test]
fn a_failed_restore_rolls_back_and_the_writers_are_resumed() {
    let pg = Cluster::start();
    pg.psql("postgres", "create role app_rw login password 'rw-Pw-77x'");
    pg.psql("postgres", "create database orders");
    let sb = Sandbox::new();
    sb.write("r.yaml", &pg_runbook("rollback", &pg, "postgres", r#"
  - id: stop_writers
    action: postgres.stop_writers
    with: {connection: db, database: orders, roles: [app_rw]}
    compensate:
      action: postgres.resume_writers
      with: {connection: db, prior_state: "{{ outputs.prior_state }}"}
  - id: restore
    action: postgres.restore
    needs: [stop_writers]
    with: {connection: db, database: orders, from: {path: does-not-exist.dump}, sha256: "0000000000000000000000000000000000000000000000000000000000000000"}
"#));
    let r = run(&sb, &["run", "r.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let trace = sb.trace(&r.run_id());
    assert!(
        trace.contains(&"compensation_succeeded:stop_writers".to_string()),
        "{trace:?}"
    );
    assert!(
        r.stderr.contains("rolled back (1 compensated)"),
        "{}",
        r.stderr
    );
    assert_eq!(
        pg.psql_as("app_rw", "rw-Pw-77x", "orders", "select 1"),
        Ok("1".into())
    );
}

#[test]
fn backup_then_restore_into_another_database_with_counts_and_a_verified_checksum() {
    let pg = Cluster::start();
    pg.psql("postgres", "create database orders");
    pg.psql("orders", "create table orders(id int primary key, note text); insert into orders select g, 'n' || g from generate_series(1, 500) g");
    let sb = Sandbox::new();
    sb.write("r.yaml", &pg_runbook("bk", &pg, "postgres", r#"
  - id: dump
    action: postgres.backup
    with: {connection: db, database: orders, to: {path: "backups/orders.dump"}}
  - id: restore
    action: postgres.restore
    needs: [dump]
    with: {connection: db, database: orders_copy, from: {path: "{{ steps.dump.outputs.path }}"}, count_tables: [public.orders], jobs: 2}
    assert: "outputs.counts['public.orders'] == 500 and outputs.sha256 == steps.dump.outputs.sha256"
"#));
    let r = run(&sb, &["run", "r.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let events = sb.events(&r.run_id());
    let dump = events
        .iter()
        .find(|e| e["event"] == "step_succeeded" && e["step"] == "dump")
        .unwrap()["outputs"]
        .clone();
    assert!(dump["size"].as_u64().unwrap() > 1000);
    assert_eq!(dump["sha256"].as_str().unwrap().len(), 64);
    assert!(
        dump["server_version"].as_str().unwrap().starts_with("15"),
        "{dump}"
    );
    assert!(dump["lsn"].as_str().unwrap().contains('/'), "{dump}");
    assert!(
        dump["consistent_at"].as_str().unwrap().ends_with('Z'),
        "{dump}"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&sb.read("backups/orders.dump.manifest.json")).unwrap();
    assert_eq!(manifest["sha256"], dump["sha256"]);
    assert_eq!(
        pg.psql("orders_copy", "select count(*), max(note) from orders"),
        "500|n99"
    );

    // A corrupted backup is refused before the target is touched.
    let mut bytes = std::fs::read(sb.path("backups/orders.dump")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(sb.path("backups/orders.dump"), &bytes).unwrap();
    pg.psql(
        "orders_copy",
        "insert into orders values (9999, 'untouched')",
    );
    sb.write(
        "again.yaml",
        &pg_runbook(
            "again",
            &pg,
            "postgres",
            r#"
  - id: restore
    action: postgres.restore
    with: {connection: db, database: orders_copy, from: {path: "backups/orders.dump"}}
"#,
        ),
    );
    let r = run(&sb, &["run", "again.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let failure = sb.failure(&r.run_id());
    assert!(
        failure.contains("it is corrupt or not the backup meant; nothing was restored"),
        "{failure}"
    );
    assert_eq!(
        pg.psql("orders_copy", "select count(*) from orders"),
        "501",
        "the target was not touched"
    );
}

#[test]
fn promote_makes_the_replica_take_writes_and_refuses_a_primary() {
    let primary = Cluster::start();
    primary.psql(
        "postgres",
        "create table t(x int); insert into t values (1)",
    );
    let replica = Cluster::replica_of(&primary);
    replica.wait_for(
        "postgres",
        "select count(*) from pg_class where relname = 't'",
        "1",
        100,
    );
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &pg_runbook(
            "failover",
            &replica,
            "postgres",
            r#"
  - id: promote
    action: postgres.promote
    with: {connection: db, wait: 30s}
  - id: takes_writes
    action: postgres.query
    needs: [promote]
    with: {connection: db, sql: "insert into t values (2) returning x", writes: true}
    assert: "outputs.rows[0].x == 2"
"#,
        ),
    );
    let r = run(&sb, &["run", "r.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let events = sb.events(&r.run_id());
    let out = events
        .iter()
        .find(|e| e["event"] == "step_succeeded" && e["step"] == "promote")
        .unwrap()["outputs"]
        .clone();
    assert_eq!(out["timeline"], 2, "{out}");
    assert!(out["replay_lag_bytes"].is_i64(), "{out}");
    assert_eq!(replica.psql("postgres", "select pg_is_in_recovery()"), "f");
    // Running it again (or against a primary) is refused in plain words.
    let r = run(&sb, &["run", "r.yaml"]);
    assert_eq!(r.code, 1);
    let failure = sb.failure(&r.run_id());
    assert!(failure.contains("not a replica"), "{failure}");
}

/// The shipped procedures, end to end against real clusters.
mod shipped {
    use super::*;

    fn shipped(name: &str) -> String {
        common::root()
            .join("runbooks")
            .join(name)
            .display()
            .to_string()
    }

    /// `--state` for one of the two stores: the folder, or a database on `pg` itself.
    fn state(pg: &Cluster, on_postgres: bool) -> String {
        if on_postgres {
            pg.psql("postgres", "create database lifeboat_state");
            format!("postgres://postgres@127.0.0.1:{}/lifeboat_state", pg.port)
        } else {
            ".lifeboat".into()
        }
    }

    #[test]
    fn postgres_restore_local_on_the_folder_store() {
        restore_local(false);
    }

    #[test]
    fn postgres_restore_local_on_the_postgres_store() {
        restore_local(true);
    }

    #[test]
    fn postgres_failover_on_the_folder_store() {
        failover(false);
    }

    #[test]
    fn postgres_failover_on_the_postgres_store() {
        failover(true);
    }

    /// The run's events as `event:step`, read back through `lifeboat log` from either store.
    fn trace_in(sb: &Sandbox, st: &str, run: &str) -> Vec<String> {
        let log = sb.lifeboat_env(
            &["log", run, "--json", "--state", st],
            &[("PGPASSWORD", PASSWORD)],
        );
        assert_eq!(log.code, 0, "{}", log.stderr);
        log.stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|e| {
                format!(
                    "{}:{}",
                    e["event"].as_str().unwrap(),
                    e["step"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    fn restore_local(on_postgres: bool) {
        let pg = Cluster::start();
        let st = state(&pg, on_postgres);
        pg.psql("postgres", "create role app_rw login password 'rw-Pw-77x'");
        pg.psql("postgres", "create database orders");
        pg.psql("orders", "create table orders(id int primary key); insert into orders select generate_series(1, 42); grant all on orders to app_rw");
        let sb = Sandbox::new();
        // The backup to restore, taken by lifeboat itself; then the data goes bad.
        sb.write("bk.yaml", &pg_runbook("bk", &pg, "orders", "  - {id: dump, action: postgres.backup, with: {connection: db, to: {path: orders.dump}}}\n"));
        assert_eq!(run(&sb, &["run", "bk.yaml"]).code, 0);
        pg.psql("orders", "delete from orders where id > 10");
        let url = format!("db_url={}", pg.url("orders"));
        let r = sb.lifeboat_env(
            &[
                "run",
                &shipped("postgres-restore-local.yaml"),
                "-p",
                &url,
                "-p",
                "backup_path=orders.dump",
                "-p",
                "min_orders=40",
                "--state",
                &st,
            ],
            &[("PGPASSWORD", PASSWORD)],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(pg.psql("orders", "select count(*) from orders"), "42");
        assert_eq!(
            pg.psql_as(
                "app_rw",
                "rw-Pw-77x",
                "orders",
                "insert into orders values (43)"
            ),
            Ok(String::new())
        );

        // Too few rows after the restore: verify fails, the run rolls back, the writers come back.
        let r = sb.lifeboat_env(
            &[
                "run",
                &shipped("postgres-restore-local.yaml"),
                "-p",
                &url,
                "-p",
                "backup_path=orders.dump",
                "-p",
                "min_orders=1000",
                "--state",
                &st,
            ],
            &[("PGPASSWORD", PASSWORD)],
        );
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("rolled back (1 compensated)"),
            "{}",
            r.stderr
        );
        let trace = trace_in(&sb, &st, &r.run_id());
        assert!(
            trace.contains(&"compensation_succeeded:stop_writers".to_string()),
            "{trace:?}"
        );
        let runs = sb.lifeboat_env(
            &["runs", "--json", "--state", &st],
            &[("PGPASSWORD", PASSWORD)],
        );
        let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
        let names: Vec<&str> = runs
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["runbook"].as_str())
            .collect();
        assert_eq!(
            names
                .iter()
                .filter(|n| **n == "postgres-restore-local")
                .count(),
            2,
            "{runs}"
        );
        assert_eq!(
            pg.psql_as(
                "app_rw",
                "rw-Pw-77x",
                "orders",
                "insert into orders values (44)"
            ),
            Ok(String::new())
        );
    }

    fn failover(on_postgres: bool) {
        let primary = Cluster::start();
        // The drill kills the primary: the run history lives elsewhere, as it must in real life.
        let history = on_postgres.then(Cluster::start);
        let st = state(history.as_ref().unwrap_or(&primary), on_postgres);
        primary.psql(
            "postgres",
            "create table orders(x int); insert into orders values (1)",
        );
        let replica = Cluster::replica_of(&primary);
        // Replayed by the replica: the commit the drill's RPO counts from.
        primary.psql("postgres", "insert into orders values (2)");
        replica.wait_for("postgres", "select count(*) from orders", "2", 100);
        let sb = Sandbox::new();
        let url = format!("replica_url={}", replica.url("postgres"));
        let orders = format!("orders_url={}", replica.url("postgres"));
        // The partial failure: the primary's server process dies.
        let kill = format!(
            "primary_stop_command={} stop {}",
            common::root().join("scripts/pg-cluster").display(),
            primary.dir.display()
        );
        let r = sb.lifeboat_env(
            &[
                "drill",
                &shipped("postgres-failover.yaml"),
                "--scenario",
                "partial-failure",
                "-p",
                &url,
                "-p",
                &orders,
                "-p",
                "min_orders=2",
                "-p",
                &kill,
                "--yes",
                "--state",
                &st,
            ],
            &[("PGPASSWORD", PASSWORD)],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(
            r.stderr
                .contains("drill PASSED: postgres-failover / partial-failure"),
            "{}",
            r.stderr
        );
        assert!(
            primary
                .psql_as("postgres", PASSWORD, "postgres", "select 1")
                .is_err(),
            "the primary is down"
        );
        assert_eq!(replica.psql("postgres", "select pg_is_in_recovery()"), "f");
        let report = sb.lifeboat_env(
            &["drill-report", &r.run_id(), "--json", "--state", &st],
            &[("PGPASSWORD", PASSWORD)],
        );
        let report: serde_json::Value = serde_json::from_str(&report.stdout).unwrap();
        assert_eq!(
            report["restored_as_of"]["output"], "replayed_at",
            "{report}"
        );
        assert!(report["rpo_ms"].as_u64().is_some(), "{report}");
        let trace = trace_in(&sb, &st, &r.run_id());
        assert!(
            trace.contains(&"approval_granted:go_ahead".to_string()),
            "{trace:?}"
        );
        assert!(
            trace.contains(&"step_succeeded:verify_writes".to_string()),
            "{trace:?}"
        );
    }
}

#[test]
fn tls_when_the_url_asks_verified_against_the_given_ca() {
    let pg = Cluster::start_tls();
    let ca = pg.dir.join("tls/ca.crt").display().to_string();
    let sb = Sandbox::new();
    let steps = "steps:\n  - {id: q, action: postgres.query, with: {connection: db, sql: 'select ssl, version from pg_stat_ssl where pid = pg_backend_pid()'}, assert: 'outputs.rows[0].ssl'}\n";
    let rb = |ca: &str| {
        runbook(
            "tls",
            &format!(
                "secrets:\n  pg_password: {{env: LB_PG_PASSWORD}}\nconnections:\n  db: {{postgres: {{url: \"{}?sslmode=require\", password: \"{{{{ secrets.pg_password }}}}\"{ca}}}}}\n{steps}",
                pg.url("postgres")
            ),
        )
    };
    sb.write("tls.yaml", &rb(&format!(", ca_file: \"{ca}\"")));
    let r = run(&sb, &["run", "tls.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = sb
        .events(&r.run_id())
        .into_iter()
        .find(|e| e["event"] == "step_succeeded")
        .unwrap();
    assert!(
        out["outputs"]["rows"][0]["version"]
            .as_str()
            .unwrap()
            .starts_with("TLS"),
        "{out}"
    );
    // Without the CA the self-signed chain is refused, at once and in words.
    sb.write("untrusted.yaml", &rb(""));
    let r = run(&sb, &["run", "untrusted.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let failure = sb.failure(&r.run_id()).to_lowercase();
    assert!(failure.contains("certificate"), "{failure}");
}

/// `sql_literal` and `sql_ident` keep hostile values values on a real server: each lands as
/// text, or names a table, exactly; nothing else runs.
#[test]
fn sql_quoting_filters_keep_values_values() {
    let pg = Cluster::start();
    pg.psql("postgres", "create table kept(v text)");
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &pg_runbook(
            "quoting",
            &pg,
            "postgres",
            "  - {id: put, action: postgres.query, with: {connection: db, writes: true, sql: \"insert into kept values ({{ params.v | sql_literal }})\"}}\n  - {id: name, action: postgres.query, needs: [put], with: {connection: db, writes: true, sql: \"create table {{ params.v | sql_ident }} (x int)\"}}\n",
        )
        .replace("connections:", "params:\n  v: {type: string}\nconnections:"),
    );
    let values = [
        "x'); drop table kept; --",
        "\\'); drop table kept; --",
        "a\\b'c\"d",
        "Robert\"); DROP TABLE kept;--",
        "$$; drop table kept; $$",
    ];
    for v in values {
        let r = sb.lifeboat_env(
            &["run", "r.yaml", "-p", &format!("v={v}")],
            &[("LB_PG_PASSWORD", PASSWORD)],
        );
        assert_eq!(r.code, 0, "{v}: {}", r.stderr);
    }
    let stored = pg.psql("postgres", "select string_agg(v, '|' order by v) from kept");
    let mut expected: Vec<&str> = values.to_vec();
    expected.sort();
    assert_eq!(stored, expected.join("|"));
    let tables = pg.psql(
        "postgres",
        "select count(*) from pg_tables where schemaname = 'public'",
    );
    assert_eq!(
        tables,
        (values.len() + 1).to_string(),
        "each value named one table, and `kept` stands"
    );
}

/// scripts/pg-cluster (and so scripts/drill-demo) in a folder inside a private one: the postgres
/// user cannot reach it, so the cluster lives under /tmp, works the same, and goes with `stop`.
#[test]
fn a_cluster_in_a_private_folder_starts_where_postgres_can_reach_it() {
    use std::os::unix::fs::PermissionsExt;
    let top = tempfile::tempdir().unwrap();
    let private = top.path().join("private");
    std::fs::create_dir_all(private.join("inner")).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dir = private.join("inner/pg");
    let script = common::root().join("scripts/pg-cluster");
    let out = std::process::Command::new(&script)
        .arg("start")
        .arg(&dir)
        .env("PG_TEST_PASSWORD", "Priv-pw-51x")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = std::fs::read_to_string(dir.join("port")).unwrap();
    let moved = std::fs::read_to_string(dir.join("server-dir")).ok();
    let ready = std::process::Command::new("/usr/lib/postgresql/15/bin/pg_isready")
        .args(["-h", "127.0.0.1", "-p", port.trim()])
        .status()
        .unwrap();
    let stop = std::process::Command::new(&script)
        .arg("stop")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(ready.success(), "the cluster does not answer");
    assert!(stop.status.success());
    if rustix::process::geteuid().is_root() {
        let moved = moved.expect("as root, the cluster moved where postgres can reach it");
        assert!(moved.trim().starts_with("/tmp/lifeboat-pg."), "{moved}");
        assert!(
            !std::path::Path::new(moved.trim()).exists(),
            "stop left {moved}"
        );
    }
}
