//! `postgres.start_cluster`: start a cluster on this host and wait until it accepts connections.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::actions::support::duration_or;
use crate::actions::support::pg_local::LocalCluster;
use crate::actions::{ActionFuture, ActionSpec, DescribeContext, Exec, Output, When, out};
use crate::runbook::DurationText;

/// Start a PostgreSQL cluster on the host lifeboat runs on (`pg_ctl start -w`) and wait until it
/// accepts connections; a cluster in recovery does once it is consistent. Starting one that is
/// running succeeds and says so. When it does not start, the error ends with its log's last lines.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresStartCluster {
    pub cluster: LocalCluster,
    /// How long to wait for it to accept connections (default 5m: crash recovery can be long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<DurationText>,
}

impl ActionSpec for PostgresStartCluster {
    const NAME: &'static str = "postgres.start_cluster";
    const SUMMARY: &'static str =
        "Start a PostgreSQL cluster on this host and wait until it accepts connections";
    const OUTPUTS: &'static [Output] = &[
        out("started", "false when it was already running"),
        out("pid", "the postmaster's pid"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(&'a self, _cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let wait = duration_or(self.wait.as_ref(), std::time::Duration::from_secs(300))?;
            let started = self.cluster.start(wait).await?;
            let pid = self.cluster.running().await?;
            Ok(serde_json::json!({"started": started, "pid": pid}))
        })
    }

    fn check(&self) -> Vec<crate::actions::WithProblem> {
        crate::actions::WithProblem::duration("/wait", self.wait.as_ref())
            .into_iter()
            .collect()
    }

    fn describe(&self, _cx: &dyn DescribeContext) -> String {
        format!(
            "start {} with pg_ctl (server log: {}); wait up to {} until it accepts connections",
            self.cluster.describe(),
            self.cluster.log_file(),
            self.wait
                .as_ref()
                .and_then(|d| d.0.as_str())
                .unwrap_or("5m")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn starting_is_described_with_its_log() {
        let a = parse::<PostgresStartCluster>(
            json!({"cluster": {"data_dir": "/srv/pg/data", "log_file": "/var/log/pg.log"}, "wait": "2m"}),
        );
        assert!(!a.destructive());
        assert_eq!(
            a.describe(&Cx),
            "start the cluster in /srv/pg/data with pg_ctl (server log: /var/log/pg.log); wait up to 2m until it accepts connections"
        );
    }
}
