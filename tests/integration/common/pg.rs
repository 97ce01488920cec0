//! Throwaway PostgreSQL clusters from scripts/pg-cluster, stopped when dropped.

use std::path::PathBuf;
use std::process::Command;

pub const PASSWORD: &str = "pg-Qx9-7kTz-w2";
const PGBIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        Cluster::launch(&[])
    }

    /// A cluster serving TLS with a certificate signed by its own CA (`self.dir/tls/ca.crt`).
    pub fn start_tls() -> Cluster {
        Cluster::launch(&["--tls"])
    }

    /// A streaming replica of `primary`, made with pg_basebackup.
    pub fn replica_of(primary: &Cluster) -> Cluster {
        Cluster::launch(&["--replica-of", &primary.port.to_string()])
    }

    fn launch(extra: &[&str]) -> Cluster {
        let s = super::start_service("pg-cluster", extra, &[("PG_TEST_PASSWORD", PASSWORD)]);
        Cluster {
            dir: s.dir,
            port: s.port,
            _tmp: s.tmp,
        }
    }

    /// Another handle on a running cluster, for a thread of its own (not stopped when dropped:
    /// `Drop` stops only what `start` made).
    pub fn attach(port: u16) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        Cluster {
            dir: tmp.path().to_path_buf(),
            port,
            _tmp: tmp,
        }
    }

    /// A URL for lifeboat connections (the password goes in a secret).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Polls `sql` until it returns `want` (a replica catching up, a session starting); gives
    /// up after `tries` × 100 ms and goes on, so the assertions that follow say what is wrong.
    pub fn wait_for(&self, db: &str, sql: &str, want: &str, tries: u32) {
        for _ in 0..tries {
            if self.psql(db, sql) == want {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Runs SQL with psql as the superuser; returns unaligned, tuples-only output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.psql_as("postgres", PASSWORD, db, sql)
            .unwrap_or_else(|e| panic!("psql: {e}\n{sql}"))
    }

    pub fn psql_as(
        &self,
        user: &str,
        password: &str,
        db: &str,
        sql: &str,
    ) -> Result<String, String> {
        let out = Command::new(format!("{PGBIN}/psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                user,
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAq",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        super::stop_service("pg-cluster", &self.dir);
    }
}
