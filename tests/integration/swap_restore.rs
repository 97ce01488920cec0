//! `postgres.restore` in swap mode against a real PostgreSQL 15 and S3 gateway: a backup in
//! parts loads beside the target and takes its place only once verified; what a rename leaves
//! behind (grants, settings, comment, connection limit) comes along; compensation swaps back; a
//! bad backup or a kill at any moment never leaves the target's name empty or half-loaded.

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

struct Setup {
    pg: Cluster,
    srv: S3Server,
    sb: Sandbox,
    identity: String,
}

impl Setup {
    /// `orders` with a table big enough for a stream of its own (about 20 MB), small tables,
    /// a sequence, an index, a foreign key and a view; grants, settings, a comment and a
    /// connection limit on the database; backed up in parts to `pg/orders/1`. Then a row is
    /// added that only the old database has.
    fn new() -> Setup {
        let pg = Cluster::start();
        pg.psql(
            "postgres",
            "create role reader login; create role app_rw login",
        );
        pg.psql("postgres", "create database orders");
        pg.psql(
            "orders",
            "create table customers(id serial primary key, name text not null);
             insert into customers(name) select 'c' || g from generate_series(1, 500) g;
             create table orders(id bigint primary key, customer int references customers(id), note text);
             insert into orders select g, 1 + g % 500, repeat('x', 80) || g from generate_series(1, 200000) g;
             create index orders_customer on orders(customer);
             create view big_orders as select * from orders where id > 100;
             create table marker(note text)",
        );
        pg.psql(
            "postgres",
            "revoke connect, temporary on database orders from public;
             grant connect on database orders to reader;
             grant connect, temporary on database orders to app_rw with grant option;
             alter database orders set work_mem = '7MB';
             alter database orders set search_path = \"$user\", public, \"odd, name\";
             alter role reader in database orders set statement_timeout = '5s';
             comment on database orders is 'the orders, and it''s quoted';
             alter database orders connection limit 50",
        );
        let srv = S3Server::start(&["backups"]);
        let (identity, recipient) = identity();
        let sb = Sandbox::new();
        let s = Setup {
            pg,
            srv,
            sb,
            identity,
        };
        s.sb.write(
            "backup.yaml",
            &s.runbook(&format!(
                "  - {{id: dump, action: postgres.backup, with: {{connection: db, database: orders, to: {{connection: backups, key: pg/orders/1}}, encrypt: {{recipients: [\"{recipient}\"]}}, jobs: 2, chunk_mib: 8}}}}\n"
            )),
        );
        let r = s.run(&["run", "backup.yaml"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let out = s.sb.outputs(&r.run_id(), "dump");
        // The schema before, `orders` in chunks of about 8 MiB, the rest, the schema after.
        assert!(out["parts"].as_u64().unwrap() >= 5, "{out}");
        s.pg.psql("orders", "insert into marker values ('old')");
        s
    }

    fn runbook(&self, steps: &str) -> String {
        runbook(
            "swap",
            &format!(
                "secrets:\n  s3_key: {{env: LB_S3_KEY}}\n  s3_secret: {{env: LB_S3_SECRET}}\n  pg_password: {{env: LB_PG_PASSWORD}}\n  identity: {{env: LB_AGE_IDENTITY}}\nconnections:\n{}  db: {{postgres: {{url: \"{}\", password: \"{{{{ secrets.pg_password }}}}\"}}}}\nsteps:\n{steps}",
                self.srv.connection("backups", "backups"),
                self.pg.url("postgres")
            ),
        )
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LB_S3_KEY", ACCESS_KEY.to_string()),
            ("LB_S3_SECRET", SECRET_KEY.to_string()),
            ("LB_PG_PASSWORD", PASSWORD.to_string()),
            ("LB_AGE_IDENTITY", self.identity.clone()),
        ]
    }

    fn run(&self, args: &[&str]) -> common::sandbox::Ran {
        let env = self.env();
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.sb.lifeboat_env(args, &pairs)
    }

    /// Everything about the database named `db` that the swap must carry, as one text.
    fn shape(&self, db: &str) -> String {
        self.pg.psql(
            "postgres",
            &format!(
                "select datconnlimit, shobj_description(d.oid, 'pg_database'), \
                        (select string_agg(x, ',' order by x) from (select coalesce(g.rolname, 'PUBLIC') || ':' || a.privilege_type || ':' || a.is_grantable as x \
                           from aclexplode(d.datacl) a left join pg_roles g on g.oid = a.grantee where a.grantee <> d.datdba) acl), \
                        (select string_agg(x, ',' order by x) from (select coalesce(r.rolname, '-') || '=' || array_to_string(s.setconfig, ';') as x \
                           from pg_db_role_setting s left join pg_roles r on r.oid = s.setrole where s.setdatabase = d.oid) st) \
                 from pg_database d where datname = '{db}'"
            ),
        )
    }

    /// `old` or `new` for the database under the target's name, after checking that it is whole.
    fn which(&self) -> String {
        assert_eq!(
            self.pg.psql(
                "orders",
                "select count(*), sum(orders.id) from orders join customers on customers.id = orders.customer"
            ),
            "200000|20000100000",
            "the database under the target's name is whole"
        );
        if self.pg.psql("orders", "select count(*) from marker") == "1" {
            "old".into()
        } else {
            "new".into()
        }
    }

    fn leftovers(&self) -> String {
        self.pg.psql(
            "postgres",
            "select coalesce(string_agg(datname, ','), '') from pg_database where datname like '%__restoring_%'",
        )
    }
}

const RESTORE: &str = r#"
  - id: restore
    action: postgres.restore
    with:
      connection: db
      database: orders
      from: {connection: backups, key: pg/orders/1}
      decrypt_with: "{{ secrets.identity }}"
      count_tables: [orders, customers]
      verify: ["select count(*) = 200000 from orders", "select count(*) = 0 from marker"]
    compensate:
      action: postgres.swap_back
      with: {connection: db, database: orders, kept_database: "{{ outputs.kept_database }}"}
"#;

#[test]
fn a_swap_restore_carries_grants_and_settings_and_compensation_swaps_back() {
    let s = Setup::new();
    let before = s.shape("orders");
    assert!(
        before.contains("reader:CONNECT") && before.contains("work_mem=7MB"),
        "{before}"
    );
    // A session on the target (an application's) is ended by the swap, not waited for.
    let mut session = std::process::Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([&s.pg.url("orders"), "-c", "select pg_sleep(120)"])
        .env("PGPASSWORD", PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    s.pg.wait_for(
        "postgres",
        "select count(*) > 0 from pg_stat_activity where datname = 'orders' and query like '%pg_sleep%'",
        "t",
        100,
    );
    s.sb.write("restore.yaml", &s.runbook(RESTORE));
    let r = s.run(&["run", "restore.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let _ = session.wait();
    let out = s.sb.outputs(&r.run_id(), "restore");
    assert_eq!(out["mode"], "swap");
    assert!(out["streams"].as_u64().unwrap() >= 5, "{out}");
    assert_eq!(out["counts"]["orders"], 200000);
    assert!(out["ended_sessions"].as_i64().unwrap() >= 1, "{out}");
    let kept = out["kept_database"].as_str().unwrap().to_string();
    assert!(kept.starts_with("orders__before_"), "{kept}");
    assert_eq!(s.which(), "new");
    assert_eq!(
        s.shape("orders"),
        before,
        "grants, settings, comment carried over"
    );
    assert_eq!(s.shape(&kept), before, "the kept database keeps its own");
    assert_eq!(
        s.pg.psql(&kept, "select count(*) from marker"),
        "1",
        "the old data is kept"
    );
    // The restored database is a working copy: sequences go on, constraints hold.
    assert_eq!(
        s.pg.psql(
            "orders",
            "insert into customers(name) values ('new') returning id"
        ),
        "501"
    );
    assert!(
        s.pg.psql_as(
            "postgres",
            PASSWORD,
            "orders",
            "insert into orders values (1, 1, 'dup')"
        )
        .is_err()
    );
    assert_eq!(s.leftovers(), "");

    // A later failure rolls the run back: compensation puts the kept database back.
    s.sb.write(
        "undo.yaml",
        &s.runbook(&format!(
            "{RESTORE}  - {{id: fail, action: shell, needs: [restore], with: {{argv: [\"false\"]}}}}\n"
        )),
    );
    s.pg.psql("orders", "insert into marker values ('between')");
    let r = s.run(&["run", "undo.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let events = s.sb.events(&r.run_id());
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "compensation_succeeded" && e["step"] == "restore"),
        "{events:?}"
    );
    assert_eq!(
        s.pg.psql("orders", "select count(*) from marker"),
        "1",
        "the database from before this run is back"
    );
    assert_eq!(s.shape("orders"), before);

    // Restored where there was no database: undoing it frees the name again.
    s.sb.write(
        "fresh.yaml",
        &s.runbook(&format!(
            "{}  - {{id: fail, action: shell, needs: [restore], with: {{argv: [\"false\"]}}}}\n",
            RESTORE
                .replace("database: orders\n", "database: fresh\n")
                .replace("database: orders, kept", "database: fresh, kept")
                .replace(", \"select count(*) = 0 from marker\"", "")
        )),
    );
    let r = s.run(&["run", "fresh.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        s.sb.outputs(&r.run_id(), "restore")["kept_database"],
        serde_json::Value::Null
    );
    assert_eq!(
        s.pg.psql(
            "postgres",
            "select count(*) filter (where datname = 'fresh'), count(*) filter (where datname like 'fresh\\_\\_undone\\_%') from pg_database"
        ),
        "0|1"
    );
}

#[test]
fn a_bad_backup_fails_before_the_swap_and_the_target_is_untouched() {
    let s = Setup::new();
    let restore = "  - {id: restore, action: postgres.restore, needs: [spoil], with: {connection: db, database: orders, from: {connection: backups, key: pg/orders/1}, decrypt_with: \"{{ secrets.identity }}\"}}\n";
    let (other, _) = identity();
    let mut wrong_key = s.env();
    wrong_key.retain(|(k, _)| *k != "LB_AGE_IDENTITY");
    wrong_key.push(("LB_AGE_IDENTITY", other));
    type Env = Vec<(&'static str, String)>;
    // (what is wrong, the steps that spoil the backup, the environment, the error's words)
    let cases: Vec<(&str, &str, Env, &str)> = vec![
        (
            "the wrong key",
            "  - {id: spoil, action: wait, with: {for: 1ms}}\n",
            wrong_key,
            "cannot decrypt",
        ),
        (
            "a part cut short",
            "  - {id: get, action: s3.get, with: {connection: backups, key: pg/orders/1.part0002, to: part}}\n  - {id: cut, action: shell, needs: [get], with: {argv: [sh, -c, \"head -c 2000 part > cut\"]}}\n  - {id: spoil, action: s3.put, needs: [cut], with: {connection: backups, key: pg/orders/1.part0002, file: cut}}\n",
            s.env(),
            "SHA-256",
        ),
        (
            "a part replaced",
            "  - {id: spoil, action: s3.put, with: {connection: backups, key: pg/orders/1.part0001, content: garbage}}\n",
            s.env(),
            "SHA-256",
        ),
    ];
    for (name, spoil, env, expect) in cases {
        s.sb.write("bad.yaml", &s.runbook(&format!("{spoil}{restore}")));
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = s.sb.lifeboat_env(&["run", "bad.yaml"], &pairs);
        assert_eq!(r.code, 1, "{name}: {}", r.stderr);
        let err = s.sb.failure(&r.run_id());
        assert!(
            err.contains(expect) && err.contains("nothing was restored"),
            "{name}: {err}"
        );
        assert_eq!(s.which(), "old", "{name}");
        assert_eq!(s.leftovers(), "", "{name}: the scratch database is dropped");
    }
}

/// Kills lifeboat at spread-out moments of a restore (the download and load, the checks, the
/// swap) and looks under the target's name each time: the old database or the new one, whole.
/// `resume` then finishes the run and nothing is left behind.
#[test]
fn a_restore_killed_at_any_moment_leaves_the_old_or_the_new_database() {
    let s = Setup::new();
    s.sb.write("restore.yaml", &s.runbook(RESTORE));
    // How long an undisturbed restore takes, to spread the kills over it.
    let t0 = std::time::Instant::now();
    let r = s.run(&["run", "restore.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let whole = t0.elapsed();
    // Back to a state with the old database under the name, for the kills.
    s.pg.psql("postgres", "drop database orders with (force)");
    let kept = s.sb.outputs(&r.run_id(), "restore")["kept_database"]
        .as_str()
        .unwrap()
        .to_string();
    s.pg.psql(
        "postgres",
        &format!("alter database \"{kept}\" rename to orders"),
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 1..=8u32 {
        let at = whole.mul_f64(f64::from(i) / 8.5);
        let env = s.env();
        let mut c = s.sb.command(&["run", "restore.yaml"]);
        for (k, v) in &env {
            c.env(k, v);
        }
        let mut child = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let _ = child.kill();
        let status = child.wait().unwrap();
        let state = s.which();
        seen.insert(state.clone());
        // Finish it: whatever was under the name, the run's own restore is what ends up there.
        let runs = s.sb.lifeboat(&["runs", "--json"]);
        let newest: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
        let id = newest[0]["id"].as_str().unwrap().to_string();
        if status.success() {
            assert_eq!(state, "new", "kill {i} came too late: the run had finished");
        } else {
            let r = s.run(&["resume", &id]);
            assert_eq!(r.code, 0, "kill {i} at {at:?}: {}", r.stderr);
        }
        assert_eq!(s.which(), "new", "kill {i} at {at:?}");
        assert_eq!(s.leftovers(), "", "kill {i} at {at:?}");
        // Put the old one back for the next kill.
        let kept = s.sb.outputs(&id, "restore")["kept_database"]
            .as_str()
            .unwrap()
            .to_string();
        s.pg.psql("postgres", "drop database orders with (force)");
        s.pg.psql(
            "postgres",
            &format!("alter database \"{kept}\" rename to orders"),
        );
        assert_eq!(s.which(), "old");
    }
    assert!(
        seen.contains("old"),
        "some kill came before the swap: {seen:?}"
    );
}
