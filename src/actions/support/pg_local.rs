//! A PostgreSQL cluster on this host, started and stopped with its own `pg_ctl` as the user who
//! owns it: what `postgres.stop_cluster`, `postgres.start_cluster` and `pgbackrest.restore`
//! (which must start the cluster to know what it recovered) share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::process::{capture, command_as, tail};
use crate::actions::ActionError;

/// A cluster on the host lifeboat runs on, by its data directory.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalCluster {
    /// The cluster's data directory (`PGDATA`).
    pub data_dir: String,
    /// The operating-system user that owns it, usually `postgres`: `pg_ctl` runs as that user
    /// (through `runuser` when lifeboat is root, `sudo -n` otherwise). Absent: lifeboat's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_user: Option<String>,
    /// The folder holding `pg_ctl`. Absent: `/usr/lib/postgresql/<major>/bin` for the major
    /// version in the data directory's `PG_VERSION` (Debian's layout), else `pg_ctl` on the PATH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<String>,
    /// Server options for `pg_ctl start -o` (`-p 5433 -c listen_addresses=10.0.0.5`), for a
    /// cluster whose settings are not all in its configuration files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<String>,
    /// Where the server's output goes when started (`pg_ctl -l`). Absent: `<data_dir>.log`,
    /// beside the data directory, since a restore replaces what is inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<String>,
}

/// How `pg_ctl stop` asks the server to stop.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// Wait for every session to end.
    Smart,
    /// Roll back open transactions, end sessions, checkpoint, stop.
    #[default]
    Fast,
    /// Stop without a checkpoint: the next start runs crash recovery.
    Immediate,
}

impl StopMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

impl LocalCluster {
    fn pg_ctl(&self) -> PathBuf {
        if let Some(dir) = self.bin_dir.as_deref().filter(|d| !d.is_empty()) {
            return Path::new(dir).join("pg_ctl");
        }
        let version = std::fs::read_to_string(Path::new(&self.data_dir).join("PG_VERSION"))
            .ok()
            .map(|v| v.trim().to_string());
        if let Some(v) = version {
            let p = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin/pg_ctl"));
            if p.exists() {
                return p;
            }
        }
        PathBuf::from("pg_ctl")
    }

    pub fn log_file(&self) -> String {
        match self.log_file.as_deref().filter(|l| !l.is_empty()) {
            Some(l) => l.to_string(),
            None => format!("{}.log", self.data_dir.trim_end_matches('/')),
        }
    }

    fn user(&self) -> Option<&str> {
        self.os_user.as_deref().filter(|u| !u.is_empty())
    }

    async fn pg_ctl_run(&self, args: &[String]) -> Result<super::process::Captured, ActionError> {
        let mut cmd = command_as(self.user(), self.pg_ctl(), &[])?;
        cmd.args(args);
        capture(cmd, "pg_ctl").await
    }

    /// The postmaster's pid when the cluster is running, from `pg_ctl status` (which checks
    /// that the pid in `postmaster.pid` is alive, so a file left by a crash does not count).
    pub async fn running(&self) -> Result<Option<u32>, ActionError> {
        if !Path::new(&self.data_dir).join("PG_VERSION").exists() {
            return Err(ActionError::permanent(format!(
                "{} is not a PostgreSQL data directory (it has no PG_VERSION)",
                self.data_dir
            )));
        }
        let out = self
            .pg_ctl_run(&["status".into(), "-D".into(), self.data_dir.clone()])
            .await?;
        match out.status.code() {
            Some(0) => Ok(out
                .stdout
                .split("PID: ")
                .nth(1)
                .and_then(|r| r.split(')').next())
                .and_then(|p| p.trim().parse().ok())
                .or(Some(0))),
            // 3: not running; 4: no accessible data directory (caught above unless permissions).
            Some(3) => Ok(None),
            _ => Err(ActionError::permanent(format!(
                "pg_ctl status failed ({}): {}",
                out.status,
                tail(&out.stderr, 4)
            ))),
        }
    }

    /// Stops the server and waits for it to be gone. `Ok(None)`: it was not running.
    pub async fn stop(&self, mode: StopMode, wait: Duration) -> Result<Option<u32>, ActionError> {
        let Some(pid) = self.running().await? else {
            return Ok(None);
        };
        let out = self
            .pg_ctl_run(&[
                "stop".into(),
                "-D".into(),
                self.data_dir.clone(),
                "-m".into(),
                mode.as_str().into(),
                "-w".into(),
                "-t".into(),
                wait.as_secs().max(1).to_string(),
            ])
            .await?;
        if out.status.success() {
            return Ok(Some(pid));
        }
        let why = tail(&format!("{}\n{}", out.stdout, out.stderr), 4);
        Err(if why.contains("server does not shut down") {
            ActionError::transient(format!(
                "the server (pid {pid}) did not stop within {}s in {} mode: a server stops only once its shutdown checkpoint is written and its archiver has archived the WAL it holds, which after heavy writes takes a while; give `wait` more time: {why}",
                wait.as_secs(),
                mode.as_str()
            ))
        } else {
            ActionError::permanent(format!("pg_ctl stop failed ({}): {why}", out.status))
        })
    }

    /// Starts the server and waits until it accepts connections (a server in recovery accepts
    /// them once it is consistent). `Ok(false)`: it was already running.
    pub async fn start(&self, wait: Duration) -> Result<bool, ActionError> {
        if self.running().await?.is_some() {
            return Ok(false);
        }
        let log = self.log_file();
        let mut args: Vec<String> = vec![
            "start".into(),
            "-D".into(),
            self.data_dir.clone(),
            "-w".into(),
            "-t".into(),
            wait.as_secs().max(1).to_string(),
            "-l".into(),
            log.clone(),
        ];
        if let Some(o) = self.options.as_deref().filter(|o| !o.is_empty()) {
            args.push("-o".into());
            args.push(o.into());
        }
        let out = self.pg_ctl_run(&args).await?;
        if out.status.success() {
            return Ok(true);
        }
        // pg_ctl only says it failed; the server's log says why.
        let server_said = std::fs::read_to_string(&log)
            .map(|l| tail(&l, 4))
            .unwrap_or_default();
        let why = tail(&format!("{}\n{}", out.stdout, out.stderr), 3);
        Err(ActionError::permanent(format!(
            "the server did not start: {why}{}",
            if server_said.is_empty() {
                String::new()
            } else {
                format!("; its log ({log}) ends: {server_said}")
            }
        )))
    }

    pub fn describe(&self) -> String {
        match self.user() {
            Some(u) => format!("the cluster in {} (as {u})", self.data_dir),
            None => format!("the cluster in {}", self.data_dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_goes_beside_the_data_directory() {
        let c = LocalCluster {
            data_dir: "/var/lib/postgresql/15/main/".into(),
            os_user: Some("postgres".into()),
            bin_dir: None,
            options: None,
            log_file: None,
        };
        assert_eq!(c.log_file(), "/var/lib/postgresql/15/main.log");
        assert_eq!(
            c.describe(),
            "the cluster in /var/lib/postgresql/15/main/ (as postgres)"
        );
    }

    #[tokio::test]
    async fn a_folder_that_is_not_a_cluster_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = LocalCluster {
            data_dir: dir.path().display().to_string(),
            os_user: None,
            bin_dir: None,
            options: None,
            log_file: None,
        };
        let e = c.running().await.unwrap_err();
        assert!(
            e.message.contains("not a PostgreSQL data directory"),
            "{e:?}"
        );
    }
}
