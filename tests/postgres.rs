//! The PostgreSQL actions against real throwaway clusters (scripts/pg-cluster).

mod common;

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
    let out = |step: &str| events.iter().find(|e| e["event"] == "step_succeeded" && e["step"] == step).unwrap()["outputs"].clone();
    assert_eq!(out("count")["rows"][0]["n"], 2);
    assert_eq!(out("count")["rows"][0]["total"], 13.5);
    let rows = out("rows")["rows"].clone();
    assert_eq!(rows[0], serde_json::json!({"id": 1, "total": 10.5, "note": "a", "placed": "2026-01-02T03:04:05Z", "meta": {"vip": true}}));
    assert_eq!(rows[1]["note"], serde_json::Value::Null);
    let sneaky = events.iter().find(|e| e["event"] == "step_failed" && e["step"] == "sneaky_write").unwrap();
    assert!(sneaky["error"].as_str().unwrap().contains("read-only transaction"), "{sneaky}");
    assert_eq!(out("real_write")["row_count"], 1);
    assert_eq!(pg.psql("postgres", "select count(*) from orders"), "3");
    let log = std::fs::read_to_string(sb.log_path(&r.run_id())).unwrap();
    assert!(!log.contains(PASSWORD));
}

#[test]
fn a_wrong_password_fails_at_once_and_a_dead_server_is_retried() {
    let pg = Cluster::start();
    let sb = Sandbox::new();
    sb.write("r.yaml", &pg_runbook("auth", &pg, "postgres", "  - {id: q, action: postgres.query, with: {connection: db, sql: 'select 1'}, retry: {attempts: 3, delay: 10ms}}\n"));
    let r = sb.lifeboat_env(&["run", "r.yaml"], &[("LB_PG_PASSWORD", "wrong-Zr4-qq81")]);
    assert_eq!(r.code, 1);
    let trace = sb.trace(&r.run_id());
    assert_eq!(trace.iter().filter(|t| *t == "step_started:q").count(), 1, "{trace:?}");
    let events = sb.events(&r.run_id());
    let failed = events.iter().find(|e| e["event"] == "step_failed").unwrap();
    assert!(failed["error"].as_str().unwrap().contains("password authentication failed"), "{failed}");
    drop(pg);
    let r = run(&sb, &["run", "r.yaml"]);
    assert_eq!(r.code, 1);
    let trace = sb.trace(&r.run_id());
    assert_eq!(trace.iter().filter(|t| *t == "step_started:q").count(), 3, "{trace:?}");
}
