//! `pgbackrest.restore`: point-in-time recovery of a cluster on this host, to the moment its
//! server says it reached.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Pgbr, at, parse_time, target_time_text, unreachable_time};
use crate::actions::postgres::{self as pg, PgTarget};
use crate::actions::support::duration_or;
use crate::actions::support::pg_local::LocalCluster;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Effect, Exec, Output,
    Tpl, When, WithProblem, out, unknown_yet,
};
use crate::runbook::{ConnectionKind, DurationText};

/// Where recovery stops.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryTarget {
    /// The end of the archived WAL: everything the repository holds.
    Latest,
    /// The last commit before `time` (or at it, unless `exclusive`).
    Time,
    /// A WAL position (`lsn`).
    Lsn,
    /// A transaction id (`xid`).
    Xid,
    /// A restore point made with `pg_create_restore_point(name)`.
    Name,
    /// The end of the backup itself: the earliest consistent moment.
    Immediate,
}

impl RecoveryTarget {
    fn as_str(self) -> &'static str {
        match self {
            RecoveryTarget::Latest => "latest",
            RecoveryTarget::Time => "time",
            RecoveryTarget::Lsn => "lsn",
            RecoveryTarget::Xid => "xid",
            RecoveryTarget::Name => "name",
            RecoveryTarget::Immediate => "immediate",
        }
    }
    /// The field that holds this target's value.
    fn field(self) -> Option<&'static str> {
        match self {
            RecoveryTarget::Time => Some("time"),
            RecoveryTarget::Lsn => Some("lsn"),
            RecoveryTarget::Xid => Some("xid"),
            RecoveryTarget::Name => Some("name"),
            RecoveryTarget::Latest | RecoveryTarget::Immediate => None,
        }
    }
}

/// What the server does on reaching a target.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TargetAction {
    /// Stay in recovery, read-only, for the data to be checked before `postgres.promote`.
    #[default]
    Pause,
    /// Open for writes at once, on a new timeline.
    Promote,
}

/// Restore a stopped cluster on this host from a pgBackRest repository to a point in time,
/// start it, and wait until recovery reaches the target. The target is checked against the
/// repository (a stanza that does not exist, a wrong passphrase, a time before the oldest backup
/// or after the newest archived WAL) before anything is touched, and a running cluster is
/// refused: stop it with `postgres.stop_cluster`. pgBackRest writes `pg_control` last, so a
/// restore cut short leaves a cluster that will not start rather than a wrong one; running the
/// step again (`delta`) finishes it. `restored_as_of` is read from the recovered server: the
/// commit time of the last transaction it replayed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgbackrestRestore {
    /// A `pgbackrest` connection.
    pub connection: String,
    /// The cluster to restore, on this host. Its data directory is restored in place (pgBackRest's
    /// `pg1-path` is set to it).
    pub cluster: LocalCluster,
    /// A `postgres` connection to the cluster, to see where recovery got to.
    pub postgres: String,
    /// `latest`, `time`, `lsn`, `xid`, `name` or `immediate`.
    pub target: Tpl<RecoveryTarget>,
    /// With `target: time`: RFC 3339, e.g. `2026-11-30T14:02:30Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// With `target: lsn`, e.g. `0/3000060`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    /// With `target: xid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xid: Option<String>,
    /// With `target: name`: a restore point's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Stop just before the target rather than just after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<Tpl<bool>>,
    /// `pause` (default): stay read-only for checks, then `postgres.promote`; `promote`: open at once.
    #[serde(default)]
    pub target_action: TargetAction,
    /// Restore only the files that differ, by checksum (default true): fast when most of the
    /// data directory is still there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Tpl<bool>>,
    /// The backup to restore from (a label); pgBackRest picks the newest one before the target
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// How long to wait for recovery to reach the target once started (default 1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<DurationText>,
}

fn filled(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

impl PgbackrestRestore {
    fn value(&self, target: RecoveryTarget) -> Option<&str> {
        match target {
            RecoveryTarget::Time => filled(&self.time),
            RecoveryTarget::Lsn => filled(&self.lsn),
            RecoveryTarget::Xid => filled(&self.xid),
            RecoveryTarget::Name => filled(&self.name),
            RecoveryTarget::Latest | RecoveryTarget::Immediate => None,
        }
    }

    fn problems(&self, rendered: bool) -> Vec<WithProblem> {
        let mut p: Vec<WithProblem> = WithProblem::duration("/wait", self.wait.as_ref())
            .into_iter()
            .collect();
        let Tpl::Value(target) = self.target else {
            return p;
        };
        let given = [
            ("time", &self.time),
            ("lsn", &self.lsn),
            ("xid", &self.xid),
            ("name", &self.name),
        ];
        match target.field() {
            Some(field) => {
                let v = given
                    .iter()
                    .find(|(f, _)| *f == field)
                    .and_then(|(_, v)| v.as_deref());
                match v {
                    // Empty is how a runbook leaves the other of two targets unset: refused when
                    // the attempt starts, not by validation.
                    Some(s) if s.is_empty() && rendered => p.push(WithProblem::new(
                        format!("/{field}"),
                        format!(
                            "`target: {}` needs a value in `{field}`, which is empty",
                            target.as_str()
                        ),
                    )),
                    Some(_) => {}
                    None => p.push(WithProblem::new(
                        "",
                        format!("`target: {}` needs `{field}`", target.as_str()),
                    )),
                }
                if target == RecoveryTarget::Time
                    && let Some(t) = v.filter(|t| !t.is_empty() && !unknown_yet(t))
                    && let Err(e) = parse_time(t)
                {
                    p.push(WithProblem::new("/time", e));
                }
            }
            None => {
                if matches!(self.exclusive, Some(Tpl::Value(true))) {
                    p.push(WithProblem::new(
                        "/exclusive",
                        format!(
                            "`exclusive` means nothing with `target: {}`",
                            target.as_str()
                        ),
                    ));
                }
            }
        }
        p
    }

    /// pgBackRest's options for this target.
    fn options(&self, target: RecoveryTarget, data_dir: &str) -> Result<Vec<String>, ActionError> {
        let mut o = vec![format!("--pg1-path={data_dir}")];
        if !matches!(self.delta, Some(Tpl::Value(false))) {
            o.push("--delta".into());
        }
        if let Some(set) = filled(&self.set) {
            o.push(format!("--set={set}"));
        }
        match target {
            RecoveryTarget::Latest => o.push("--type=default".into()),
            RecoveryTarget::Immediate => o.push("--type=immediate".into()),
            _ => {
                let v = self.value(target).ok_or_else(|| {
                    ActionError::permanent(format!("`target: {}` needs a value", target.as_str()))
                })?;
                let v = if target == RecoveryTarget::Time {
                    target_time_text(parse_time(v).map_err(ActionError::permanent)?)
                } else {
                    v.to_string()
                };
                o.push(format!("--type={}", target.as_str()));
                o.push(format!("--target={v}"));
                // Not `latest`: a timeline a later promotion made must not carry recovery past
                // the moment asked for.
                o.push("--target-timeline=current".into());
                if matches!(self.exclusive, Some(Tpl::Value(true))) {
                    o.push("--target-exclusive".into());
                }
            }
        }
        if target != RecoveryTarget::Latest {
            o.push(format!(
                "--target-action={}",
                match self.target_action {
                    TargetAction::Pause => "pause",
                    TargetAction::Promote => "promote",
                }
            ));
        }
        Ok(o)
    }

    /// An error with the end of the server's log when it has stopped (recovery failed).
    async fn still_running(&self) -> Result<(), ActionError> {
        if self.cluster.running().await?.is_some() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.cluster.log_file())
            .map(|l| crate::actions::support::process::tail(&l, 3))
            .unwrap_or_default();
        Err(ActionError::permanent(format!(
            "the server stopped during recovery, before reaching the target: {log}"
        )))
    }

    /// Waits until recovery has reached its target: paused there, or promoted.
    async fn reached(
        &self,
        target: &PgTarget,
        wait: Duration,
        cx: &Exec<'_>,
    ) -> Result<serde_json::Value, ActionError> {
        let pause = self.target_action == TargetAction::Pause
            && !matches!(self.target, Tpl::Value(RecoveryTarget::Latest));
        let deadline = tokio::time::Instant::now() + wait;
        let mut said = String::new();
        // One session for the whole wait, rather than one per poll; `pg_ctl status` (a process
        // as the cluster's owner) only when no session can be had.
        let mut client: Option<tokio_postgres::Client> = None;
        loop {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = match target.connect().await {
                    Ok(c) => Some(c),
                    // Not accepting connections yet, or gone: only then is the process asked.
                    Err(e) if e.transient => {
                        self.still_running().await?;
                        None
                    }
                    Err(e) => return Err(e),
                };
            }
            if let Some(c) = &client {
                // After a promotion the replay functions still say where recovery ended.
                let row = c
                    .query_one(
                        "select pg_is_in_recovery(), \
                                case when pg_is_in_recovery() then pg_get_wal_replay_pause_state() else 'promoted' end, \
                                pg_last_xact_replay_timestamp(), pg_last_wal_replay_lsn()::text",
                        &[],
                    )
                    .await;
                let row = match row {
                    Ok(row) => row,
                    Err(e) => {
                        // A session lost because recovery failed and the server stopped.
                        self.still_running().await?;
                        return Err(pg::classify(&e, "reading the recovery state"));
                    }
                };
                let in_recovery: bool = row.get(0);
                let state: String = row.get(1);
                if state != said {
                    (cx.progress)(&format!("recovery: {state}"));
                    said = state.clone();
                }
                if !in_recovery || (pause && state == "paused") {
                    let replayed: Option<jiff::Timestamp> = row.get(2);
                    let lsn: Option<String> = row.get(3);
                    return Ok(serde_json::json!({
                        "replayed_at": replayed.map(|t| t.to_string()),
                        "lsn": lsn,
                        "in_recovery": in_recovery,
                    }));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ActionError::transient(format!(
                    "recovery did not reach the target within {} (last state: {said})",
                    crate::runbook::duration::format(wait)
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl ActionSpec for PgbackrestRestore {
    const NAME: &'static str = "pgbackrest.restore";
    const SUMMARY: &'static str =
        "Restore a stopped local cluster to a point in time with pgBackRest and recover to it";
    const OUTPUTS: &'static [Output] = &[
        out(
            "restored_as_of",
            "commit time of the last transaction the server replayed (RFC 3339); the backup's end when it replayed none",
        ),
        out(
            "restored_as_of_source",
            "`replayed` or `backup`: where restored_as_of comes from",
        ),
        out("backup_set", "the backup pgBackRest restored from"),
        out(
            "target",
            "the target as given to pgBackRest (`time 2026-11-30 14:02:30.000000+00`)",
        ),
        out("lsn", "the WAL position recovery stopped at"),
        out(
            "in_recovery",
            "true when paused at the target, read-only, waiting for postgres.promote",
        ),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const CHANGES: Effect = Effect::Irreversible;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;
    const RESTORED_AS_OF: Option<&'static str> = Some("restored_as_of");

    fn idempotent(&self) -> bool {
        // A second attempt restores the same target again, or finds the first one's restore
        // noted and only starts the cluster and waits.
        true
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let Tpl::Value(target) = self.target else {
                return Err(ActionError::permanent(
                    "`target` did not render to a target",
                ));
            };
            if let Some(p) = self.problems(true).into_iter().next() {
                return Err(ActionError::permanent(format!(
                    "{}: {}",
                    p.field, p.message
                )));
            }
            let wait = duration_or(self.wait.as_ref(), Duration::from_secs(3600))?;
            let pgbr = Pgbr::from_exec(cx, &self.connection)?;
            let postgres = PgTarget::from_exec(cx, &self.postgres, None)?;
            let options = self.options(target, &self.cluster.data_dir)?;
            let described = match self.value(target) {
                Some(_) => format!(
                    "{} {}",
                    target.as_str(),
                    options
                        .iter()
                        .find_map(|o| o.strip_prefix("--target="))
                        .unwrap_or_default()
                ),
                None => target.as_str().to_string(),
            };
            let noted = (cx.recall)("restored");
            let set = match noted
                .as_ref()
                .and_then(|n| n.get("backup_set"))
                .and_then(|s| s.as_str())
            {
                Some(set) => {
                    (cx.progress)(
                        "the restore was done by an earlier attempt; starting the cluster",
                    );
                    Some(set.to_string())
                }
                None => {
                    // What can be known before touching anything is checked first.
                    let info = pgbr.info().await?;
                    if target == RecoveryTarget::Time {
                        let t = parse_time(self.value(target).unwrap_or_default())
                            .map_err(ActionError::permanent)?;
                        let wal = pgbr.newest_wal_at(&info).await?;
                        if let Some(why) = unreachable_time(&info, wal, t) {
                            return Err(ActionError::permanent(format!(
                                "{why}; nothing was changed"
                            )));
                        }
                    } else if info.backup.iter().all(|b| b.error == Some(true)) {
                        return Err(ActionError::permanent(
                            "the repository holds no valid backup to restore; nothing was changed",
                        ));
                    }
                    if let Some(pid) = self.cluster.running().await? {
                        return Err(ActionError::permanent(format!(
                            "{} is running (pid {pid}): stop it first (postgres.stop_cluster); nothing was changed",
                            self.cluster.describe()
                        )));
                    }
                    (cx.progress)(&format!("restoring to {described}"));
                    let said = pgbr.run("restore", &options).await?;
                    // "repo1: restore backup set 20261130-223042F, recovery will start at ..."
                    let set = said
                        .split("restore backup set ")
                        .nth(1)
                        .and_then(|r| r.split([',', ' ', '\n']).next())
                        .map(String::from);
                    (cx.note)(
                        "restored",
                        serde_json::json!({"backup_set": set, "target": described}),
                    )
                    .await?;
                    set
                }
            };
            (cx.progress)("starting the cluster to recover");
            self.cluster
                .start(Duration::from_secs(600).min(wait))
                .await?;
            let reached = self.reached(&postgres, wait, cx).await?;
            let (restored_as_of, source) = match reached["replayed_at"].as_str() {
                Some(t) => (Some(t.to_string()), "replayed"),
                None => {
                    let info = pgbr.info().await?;
                    let stop = info
                        .backup
                        .iter()
                        .find(|b| Some(&b.label) == set.as_ref())
                        .map(|b| at(b.timestamp.stop));
                    (stop, "backup")
                }
            };
            Ok(serde_json::json!({
                "restored_as_of": restored_as_of,
                "restored_as_of_source": source,
                "backup_set": set,
                "target": described,
                "lsn": reached["lsn"],
                "in_recovery": reached["in_recovery"],
            }))
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        vec![
            ConnectionUse {
                field: "/connection",
                name: &self.connection,
                kinds: super::KINDS,
            },
            ConnectionUse {
                field: "/postgres",
                name: &self.postgres,
                kinds: &[ConnectionKind::Postgres],
            },
        ]
    }

    fn check(&self) -> Vec<WithProblem> {
        self.problems(false)
    }

    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let target = match &self.target {
            Tpl::Template(t) => format!("the target {t}"),
            Tpl::Value(RecoveryTarget::Latest) => "the end of the archived WAL".to_string(),
            Tpl::Value(RecoveryTarget::Immediate) => "the end of the backup".to_string(),
            Tpl::Value(t) => format!(
                "{} {}{}",
                t.as_str(),
                self.value(*t).unwrap_or("(not given)"),
                if matches!(self.exclusive, Some(Tpl::Value(true))) {
                    " (exclusive)"
                } else {
                    ""
                }
            ),
        };
        let then = match (&self.target, self.target_action) {
            (Tpl::Value(RecoveryTarget::Latest), _) | (_, TargetAction::Promote) => "promote it",
            (_, TargetAction::Pause) => "leave it paused there, read-only",
        };
        format!(
            "REPLACE the data of {} with a restore from {}{} to {target} ({}); start it, wait up to {} for recovery to reach the target, {then}",
            self.cluster.describe(),
            cx.connection(&self.connection),
            filled(&self.set)
                .map(|s| format!(" (backup {s})"))
                .unwrap_or_default(),
            if matches!(self.delta, Some(Tpl::Value(false))) {
                "every file"
            } else {
                "only files that differ"
            },
            self.wait
                .as_ref()
                .and_then(|d| d.0.as_str())
                .unwrap_or("1h"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    fn with(extra: serde_json::Value) -> PgbackrestRestore {
        let mut w =
            json!({"connection": "repo", "postgres": "db", "cluster": {"data_dir": "/srv/pg"}});
        w.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        parse(w)
    }

    #[test]
    fn a_time_target_becomes_pgbackrest_options() {
        let a = with(json!({"target": "time", "time": "2026-11-30T14:02:30Z", "exclusive": true}));
        assert!(a.check().is_empty());
        assert_eq!(
            a.options(RecoveryTarget::Time, "/srv/pg").unwrap(),
            [
                "--pg1-path=/srv/pg",
                "--delta",
                "--type=time",
                "--target=2026-11-30 14:02:30.000000+00",
                "--target-timeline=current",
                "--target-exclusive",
                "--target-action=pause"
            ]
        );
        assert_eq!(a.effect(), Effect::Irreversible);
        assert!(a.destructive());
        assert_eq!(
            a.describe(&Cx),
            "REPLACE the data of the cluster in /srv/pg with a restore from <repo> to time 2026-11-30T14:02:30Z (exclusive) (only files that differ); start it, wait up to 1h for recovery to reach the target, leave it paused there, read-only"
        );
        let latest = with(json!({"target": "latest"}));
        assert_eq!(
            latest.options(RecoveryTarget::Latest, "/d").unwrap(),
            ["--pg1-path=/d", "--delta", "--type=default"]
        );
    }

    #[test]
    fn a_target_without_its_value_is_refused() {
        let a = with(json!({"target": "time"}));
        assert_eq!(a.check()[0].message, "`target: time` needs `time`");
        let b = with(json!({"target": "name", "name": "{{ params.point }}"}));
        assert!(b.check().is_empty());
        // A runbook may leave one of two targets empty by default; the attempt refuses it.
        let c = with(json!({"target": "name", "name": ""}));
        assert!(c.check_rendered().is_empty());
        assert_eq!(c.problems(true)[0].field, "/name");
        let d = with(json!({"target": "time", "time": "soon"}));
        assert_eq!(d.check()[0].field, "/time");
        let e = with(json!({"target": "latest", "exclusive": true}));
        assert_eq!(e.check()[0].field, "/exclusive");
    }
}
