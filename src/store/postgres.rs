//! The PostgreSQL state store (`--state postgres://...`): one history for a team. Runs, their
//! runbooks, log lines and heads are rows; locks are session advisory locks held by a connection
//! kept open for the run's life (the server drops them when the process dies), with a row per lock
//! naming its holder. The schema is created and migrated by lifeboat, versioned in
//! `lifeboat_schema`.

use super::{Holder, LockError, LockState};
use crate::runlog::{Head, LogWriter, PgLog};

/// Migrations, in order; the schema's version is how many have run.
const MIGRATIONS: &[&str] = &[
    "
    create table lifeboat_runs (
        id text primary key,
        runbook bytea not null,
        created_at timestamptz not null default now(),
        published boolean not null default false,
        head_seq bigint,
        head_hash text
    );
    create table lifeboat_log (
        run text not null references lifeboat_runs(id),
        seq bigint not null,
        line text not null,
        primary key (run, seq)
    );
    create table lifeboat_locks (
        name text primary key,
        holder jsonb not null
    );
",
    "
    alter table lifeboat_runs add column head_open boolean not null default false;
",
];

/// Serializes migrations between lifeboats starting at the same time.
const MIGRATION_LOCK: i64 = 0x6c69_6665_626f_6174; // "lifeboat"

pub struct PgStore {
    config: tokio_postgres::Config,
    client: tokio_postgres::Client,
    shown: String,
}

/// A run's locks: advisory locks held by `client`'s session.
pub struct PgLocks {
    client: tokio_postgres::Client,
    names: Vec<String>,
    holder: Holder,
    pub taken_over: Vec<(String, String, u32)>,
}

fn err(doing: &str) -> impl Fn(tokio_postgres::Error) -> String + '_ {
    move |e| {
        let detail = e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string());
        format!("state store: {doing}: {detail}")
    }
}

impl PgStore {
    pub async fn open(url: &str) -> Result<PgStore, String> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("--state: not a PostgreSQL URL: {e}"))?;
        if config.get_password().is_none()
            && let Ok(p) = std::env::var("PGPASSWORD")
        {
            config.password(p);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        config.application_name("lifeboat-state");
        let shown = crate::runbook::redact_url(url);
        let client = connect(&config)
            .await
            .map_err(|e| format!("cannot reach the state store {shown}: {e}"))?;
        let store = PgStore {
            config,
            client,
            shown,
        };
        store.migrate().await?;
        Ok(store)
    }

    pub fn describe(&self) -> String {
        self.shown.clone()
    }

    /// The role this session authenticated as. `SET ROLE` changes `current_user`, not this.
    pub async fn session_user(&self) -> Result<String, String> {
        let row = self
            .client
            .query_one("select session_user::text", &[])
            .await
            .map_err(err("reading who is connected"))?;
        Ok(row.get(0))
    }

    async fn migrate(&self) -> Result<(), String> {
        let c = &self.client;
        // A schema already current needs no DDL: roles that may only read and append (an
        // approver's) can use the store without the right to create tables.
        let exists: bool = c
            .query_one("select to_regclass('lifeboat_schema') is not null", &[])
            .await
            .map_err(err("reading the schema version"))?
            .get(0);
        let current: Option<i32> = if exists {
            c.query_one("select max(version) from lifeboat_schema", &[])
                .await
                .map_err(err("reading the schema version"))?
                .get(0)
        } else {
            None
        };
        if current == Some(MIGRATIONS.len() as i32) {
            return Ok(());
        }
        c.batch_execute("begin").await.map_err(err("migrating"))?;
        let r = async {
            c.execute("select pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            c.batch_execute("create table if not exists lifeboat_schema (version int not null)")
                .await?;
            let v: Option<i32> = c
                .query_opt("select version from lifeboat_schema", &[])
                .await?
                .map(|r| r.get(0));
            let v = v.unwrap_or(0);
            if v == 0 {
                c.execute("insert into lifeboat_schema values (0)", &[])
                    .await?;
            }
            for (i, m) in MIGRATIONS.iter().enumerate().skip(v as usize) {
                c.batch_execute(m).await?;
                c.execute(
                    "update lifeboat_schema set version = $1",
                    &[&(i as i32 + 1)],
                )
                .await?;
            }
            Ok::<i32, tokio_postgres::Error>(v)
        }
        .await;
        match r {
            Ok(v) if v as usize > MIGRATIONS.len() => {
                let _ = c.batch_execute("rollback").await;
                Err(format!(
                    "the state store's schema is version {v}, newer than this lifeboat knows ({}): upgrade lifeboat",
                    MIGRATIONS.len()
                ))
            }
            Ok(_) => c.batch_execute("commit").await.map_err(err("migrating")),
            Err(e) => {
                let _ = c.batch_execute("rollback").await;
                Err(err("migrating")(e))
            }
        }
    }

    pub async fn create_run(&self, run: &str, runbook: &[u8]) -> Result<LogWriter, String> {
        let head = Head::created(run);
        self.client
            .execute(
                "insert into lifeboat_runs(id, runbook, head_seq, head_hash, head_open) \
                 values ($1, $2, 0, $3, true)",
                &[&run, &runbook, &head.hash],
            )
            .await
            .map_err(err("creating the run"))?;
        self.log_writer(run, 0, head.hash).await
    }

    /// Removes a run that was created but never published (its creation failed half-way).
    pub async fn abandon_run(&self, run: &str) -> Result<(), String> {
        self.client
            .batch_execute("begin")
            .await
            .map_err(err("removing the unfinished run"))?;
        let removed = async {
            let unpublished = "select 1 from lifeboat_runs where id = $1 and not published";
            if self.client.query_opt(unpublished, &[&run]).await?.is_some() {
                self.client
                    .execute("delete from lifeboat_log where run = $1", &[&run])
                    .await?;
                self.client
                    .execute("delete from lifeboat_runs where id = $1", &[&run])
                    .await?;
            }
            self.client.batch_execute("commit").await
        }
        .await;
        if removed.is_err() {
            let _ = self.client.batch_execute("rollback").await;
        }
        removed.map_err(err("removing the unfinished run"))
    }

    pub async fn publish_run(&self, run: &str) -> Result<(), String> {
        self.client
            .execute(
                "update lifeboat_runs set published = true where id = $1",
                &[&run],
            )
            .await
            .map(|_| ())
            .map_err(err("recording the run"))
    }

    pub async fn log_writer(
        &self,
        run: &str,
        last_seq: u64,
        prev: String,
    ) -> Result<LogWriter, String> {
        let client = connect(&self.config)
            .await
            .map_err(|e| format!("state store: {e}"))?;
        Ok(LogWriter::Pg(Box::new(PgLog::new(
            client, run, last_seq, prev,
        ))))
    }

    pub async fn exists(&self, run: &str) -> Result<(), String> {
        let row = self
            .client
            .query_opt(
                "select 1 from lifeboat_runs where id = $1 and published",
                &[&run],
            )
            .await
            .map_err(err("looking up the run"))?;
        match row {
            Some(_) => Ok(()),
            None => Err(format!(
                "no run `{run}` in {} (see `lifeboat runs`)",
                self.shown
            )),
        }
    }

    pub async fn drive(&self, run: &str) -> Result<tokio_postgres::Client, String> {
        let client = connect(&self.config)
            .await
            .map_err(|e| format!("state store: {e}"))?;
        let got: bool = client
            .query_one(
                "select pg_try_advisory_lock(hashtextextended('lifeboat-run:' || $1, 0))",
                &[&run],
            )
            .await
            .map_err(err("locking the run"))?
            .get(0);
        if got {
            Ok(client)
        } else {
            Err(format!(
                "run {run} is being driven by another lifeboat process"
            ))
        }
    }

    pub async fn runs(&self) -> Result<Vec<String>, String> {
        Ok(self
            .client
            .query(
                "select id from lifeboat_runs where published order by id desc",
                &[],
            )
            .await
            .map_err(err("listing runs"))?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    pub async fn read_log(&self, run: &str) -> Result<Vec<u8>, String> {
        self.exists(run).await?;
        let rows = self
            .client
            .query(
                "select line from lifeboat_log where run = $1 order by seq",
                &[&run],
            )
            .await
            .map_err(err("reading the run log"))?;
        let mut out = Vec::new();
        for r in rows {
            let line: String = r.get(0);
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        Ok(out)
    }

    pub async fn runbook(&self, run: &str) -> Result<Vec<u8>, String> {
        self.client
            .query_opt("select runbook from lifeboat_runs where id = $1", &[&run])
            .await
            .map_err(err("reading the runbook"))?
            .map(|r| r.get(0))
            .ok_or_else(|| format!("no run `{run}`"))
    }

    pub async fn head(&self, run: &str) -> Result<Option<Head>, String> {
        let row = self
            .client
            .query_opt(
                "select head_seq, head_hash, head_open from lifeboat_runs where id = $1",
                &[&run],
            )
            .await
            .map_err(err("reading the head anchor"))?;
        Ok(row.and_then(|r| {
            let seq: Option<i64> = r.get(0);
            let hash: Option<String> = r.get(1);
            Some(Head {
                seq: seq? as u64,
                hash: hash?,
                open: r.get(2),
            })
        }))
    }

    pub async fn write_head(&self, run: &str, head: &Head) -> Result<(), String> {
        self.client
            .execute(
                "update lifeboat_runs set head_seq = $2, head_hash = $3, head_open = $4 where id = $1",
                &[&run, &(head.seq as i64), &head.hash, &head.open],
            )
            .await
            .map(|_| ())
            .map_err(err("writing the head anchor"))
    }

    /// All or none, on one session kept open for the run: advisory locks are the liveness, the
    /// rows say who holds them and whether a stopped run keeps them.
    pub async fn acquire(&self, names: &[String], me: &Holder) -> Result<PgLocks, LockError> {
        let mut sorted: Vec<String> = names.to_vec();
        sorted.sort();
        sorted.dedup();
        let first = sorted.first().cloned().unwrap_or_default();
        let store_err = |name: &str, message: String| LockError::Store {
            name: name.to_string(),
            message,
        };
        let client = connect(&self.config)
            .await
            .map_err(|e| store_err(&first, e))?;
        let mut set = PgLocks {
            client,
            names: Vec::new(),
            holder: me.clone(),
            taken_over: Vec::new(),
        };
        for name in sorted {
            let got: bool = set
                .client
                .query_one(
                    "select pg_try_advisory_lock(hashtextextended('lifeboat-lock:' || $1, 0))",
                    &[&name],
                )
                .await
                .map_err(|e| store_err(&name, err("taking the lock")(e)))?
                .get(0);
            let row = set
                .client
                .query_opt(
                    "select holder from lifeboat_locks where name = $1",
                    &[&name],
                )
                .await
                .map_err(|e| store_err(&name, err("reading the lock")(e)))?;
            let prev: Option<Holder> =
                row.and_then(|r| serde_json::from_value(r.get::<_, serde_json::Value>(0)).ok());
            if !got {
                let holder = prev.unwrap_or_else(|| Holder {
                    run: "?".into(),
                    pid: 0,
                    host: "?".into(),
                    since: "?".into(),
                    state: LockState::Held,
                });
                return Err(LockError::Held { name, holder });
            }
            set.taken_over.extend(super::take_over(&name, prev, me)?);
            let holder = serde_json::to_value(me).expect("holder serializes");
            set.client
                .execute(
                    "insert into lifeboat_locks(name, holder) values ($1, $2) on conflict (name) do update set holder = excluded.holder",
                    &[&name, &holder],
                )
                .await
                .map_err(|e| store_err(&name, err("recording the lock")(e)))?;
            set.names.push(name);
        }
        Ok(set)
    }
}

impl PgLocks {
    /// The advisory locks live as long as this session: once its connection is gone (a
    /// restarted server, a cut network), so are they, and another run may take them.
    pub fn keep(&self) -> Result<(), String> {
        if self.client.is_closed() {
            Err(format!(
                "locks {}: the state store's session holding them was lost",
                self.names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        } else {
            Ok(())
        }
    }

    /// Records the new state, then ends the session, which drops the advisory locks.
    pub async fn set_state(mut self, state: LockState) {
        self.holder.state = state;
        let holder = serde_json::to_value(&self.holder).expect("holder serializes");
        for name in &self.names {
            let _ = self
                .client
                .execute(
                    "update lifeboat_locks set holder = $2 where name = $1",
                    &[name, &holder],
                )
                .await;
        }
    }
}

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, String> {
    // The state store is reached without TLS unless the URL asks for it (sslmode=require).
    use tokio_postgres::config::SslMode;
    if config.get_ssl_mode() == SslMode::Disable || config.get_ssl_mode() == SslMode::Prefer {
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(client)
    } else {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
            crate::actions::tls_config(None).map_err(|e| e.message)?,
        );
        let (client, conn) = config.connect(tls).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(client)
    }
}
