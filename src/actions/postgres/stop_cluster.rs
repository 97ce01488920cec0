//! `postgres.stop_cluster`: stop a cluster on this host with its `pg_ctl`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::actions::support::duration_or;
use crate::actions::support::pg_local::{LocalCluster, StopMode};
use crate::actions::{ActionFuture, ActionSpec, DescribeContext, Exec, Output, When, out};
use crate::runbook::DurationText;

/// Stop a PostgreSQL cluster on the host lifeboat runs on (`pg_ctl stop -w`), for what needs it
/// stopped: a physical restore, a move of its files. Stopping one that is not running succeeds
/// and says so. Undo it with `postgres.start_cluster` as the step's `compensate`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresStopCluster {
    pub cluster: LocalCluster,
    /// `fast` (default): open transactions are rolled back and sessions ended; `smart` waits for
    /// sessions to end; `immediate` skips the checkpoint (the next start runs crash recovery).
    #[serde(default)]
    pub mode: StopMode,
    /// How long to wait for the server to be gone (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<DurationText>,
}

impl ActionSpec for PostgresStopCluster {
    const NAME: &'static str = "postgres.stop_cluster";
    const SUMMARY: &'static str = "Stop a PostgreSQL cluster on this host (pg_ctl stop)";
    const OUTPUTS: &'static [Output] = &[
        out("was_running", "whether the server was running"),
        out("pid", "the postmaster's pid it stopped (null when none)"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;

    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(&'a self, _cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let wait = duration_or(self.wait.as_ref(), std::time::Duration::from_secs(60))?;
            let pid = self.cluster.stop(self.mode, wait).await?;
            Ok(serde_json::json!({"was_running": pid.is_some(), "pid": pid}))
        })
    }

    fn check(&self) -> Vec<crate::actions::WithProblem> {
        crate::actions::WithProblem::duration("/wait", self.wait.as_ref())
            .into_iter()
            .collect()
    }

    fn describe(&self, _cx: &dyn DescribeContext) -> String {
        format!(
            "stop {} with pg_ctl ({} mode); wait up to {} for it to be gone",
            self.cluster.describe(),
            self.mode.as_str(),
            self.wait
                .as_ref()
                .and_then(|d| d.0.as_str())
                .unwrap_or("60s")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Effect;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn stopping_is_destructive_and_described() {
        let a = parse::<PostgresStopCluster>(
            json!({"cluster": {"data_dir": "/srv/pg", "os_user": "postgres"}}),
        );
        assert_eq!(a.effect(), Effect::Changes);
        assert!(a.destructive());
        assert_eq!(
            a.describe(&Cx),
            "stop the cluster in /srv/pg (as postgres) with pg_ctl (fast mode); wait up to 60s for it to be gone"
        );
        assert!(
            reject::<PostgresStopCluster>(json!({"cluster": {"data_dir": "/x", "port": 5}}))
                .contains("unknown field")
        );
    }
}
