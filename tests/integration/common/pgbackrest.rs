//! A cluster with WAL archiving through pgBackRest into an encrypted repository on a TLS S3
//! gateway (scripts/pgbackrest-stanza), seeded with an `orders` table its writers use.

use std::path::PathBuf;

use super::pg::Cluster;
use super::s3::S3Server;

pub const CIPHER_PASS: &str = "pitr-cipher-Wm4-k8Lq";
pub const WRITER_PASSWORD: &str = "writer-pw-83Jd";

pub struct Pitr {
    pub s3: S3Server,
    pub pg: Cluster,
    pub config: PathBuf,
}

impl Pitr {
    /// Archiving on, the stanza created, 1000 orders, and role `app_rw` that writes them.
    pub fn start() -> Pitr {
        let s3 = S3Server::start_tls(&["pgrepo"]);
        let pg = Cluster::start();
        let out = std::process::Command::new(super::root().join("scripts/pgbackrest-stanza"))
            .arg(&pg.dir)
            .arg(&s3.dir)
            .arg("pgrepo")
            .env("PITR_TEST_CIPHER_PASS", CIPHER_PASS)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pgbackrest-stanza: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.psql("postgres", "create database orders");
        pg.psql(
            "postgres",
            &format!("create role app_rw login password '{WRITER_PASSWORD}'"),
        );
        pg.psql(
            "orders",
            "create table orders (id bigserial primary key, at timestamptz not null default clock_timestamp(), note text); \
             insert into orders (note) select 'seed ' || g from generate_series(1, 1000) g; \
             grant insert, select on orders to app_rw; grant usage on sequence orders_id_seq to app_rw",
        );
        let config = pg.dir.join("pgbackrest.conf");
        Pitr { s3, pg, config }
    }

    /// lifeboat's arguments for runbooks/postgres-pitr.yaml on this cluster: `head` (the
    /// subcommand, the file and flags), then a `-p` for each param of this cluster and of `extra`.
    pub fn pitr_args(&self, head: &[&str], extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = head.iter().map(|a| a.to_string()).collect();
        for p in self
            .params()
            .into_iter()
            .chain(extra.iter().map(|e| e.to_string()))
        {
            args.push("-p".into());
            args.push(p);
        }
        args
    }

    /// The `-p` values of runbooks/postgres-pitr.yaml for this cluster.
    fn params(&self) -> Vec<String> {
        vec![
            format!("pg_url={}", self.pg.url("orders")),
            format!("data_dir={}", self.pg.dir.join("data").display()),
            format!("server_log={}", self.pg.dir.join("server.log").display()),
            format!("pgbackrest_config={}", self.config.display()),
            format!("os_user={}", owner()),
        ]
    }

    /// A `connections:` entry for a `pgbackrest` connection to the stanza.
    pub fn connection(&self, name: &str) -> String {
        format!(
            "  {name}: {{pgbackrest: {{stanza: main, config: \"{}\", os_user: \"{}\", cipher_pass: \"{{{{ secrets.cipher_pass }}}}\"}}}}\n",
            self.config.display(),
            owner()
        )
    }

    /// A runbook with the passphrase secret, connection `repo` to the stanza, `extra`
    /// connections and `steps` (a YAML list).
    pub fn runbook(&self, name: &str, extra: &str, steps: &str) -> String {
        super::sandbox::runbook(
            name,
            &format!(
                "secrets: {{cipher_pass: {{env: PGBACKREST_REPO1_CIPHER_PASS}}, pg: {{env: PGPASSWORD}}}}\nconnections:\n{}{extra}steps:\n{steps}",
                self.connection("repo")
            ),
        )
    }

    /// The environment lifeboat runs with: the superuser's password and the passphrase.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PGPASSWORD", super::pg::PASSWORD.to_string()),
            ("PGBACKREST_REPO1_CIPHER_PASS", CIPHER_PASS.to_string()),
        ]
    }
}

/// Who owns the test clusters: `postgres` when the tests run as root (PostgreSQL refuses root).
pub fn owner() -> String {
    match super::os_account().as_str() {
        "root" => "postgres".into(),
        me => me.into(),
    }
}
