//! `pgbackrest.info`: what the repository holds, and how much would be lost now.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Pgbr, at, parse_time, unreachable_time};
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When,
    WithProblem, out, unknown_yet,
};
use crate::runbook::DurationText;

/// Read the stanza's backups and WAL archive range: the newest backup, the newest archived WAL
/// and how old each is (what a disaster now would lose). Fails, before anything else runs, when
/// the stanza does not exist or the repository does not decrypt; with `max_wal_age` or
/// `max_backup_age`, when the newest archived WAL or backup is older (a readiness check); with
/// `covers`, when that time cannot be recovered to.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgbackrestInfo {
    /// A `pgbackrest` connection.
    pub connection: String,
    /// A time that must be recoverable: after the end of the oldest backup and not after the
    /// newest archived WAL. Check a point-in-time restore's target with it before stopping anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covers: Option<String>,
    /// Fail when the newest archived WAL segment is older than this (the RPO, for a readiness check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_wal_age: Option<DurationText>,
    /// Fail when the newest backup finished longer ago than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backup_age: Option<DurationText>,
}

impl ActionSpec for PgbackrestInfo {
    const NAME: &'static str = "pgbackrest.info";
    const SUMMARY: &'static str =
        "Read a pgBackRest stanza's backups and WAL archive; check their age or a target time";
    const OUTPUTS: &'static [Output] = &[
        out("backups", "how many backups the repository holds"),
        out(
            "newest_backup",
            "the newest backup: label, type, started_at, stopped_at, lsn_start, lsn_stop, sizes",
        ),
        out(
            "newest_backup_at",
            "when the newest backup finished (RFC 3339)",
        ),
        out("newest_backup_age_seconds", "how long ago that was"),
        out(
            "recoverable_from",
            "the earliest time recoverable: the end of the oldest backup",
        ),
        out("wal_min", "the oldest WAL segment in the archive"),
        out("wal_max", "the newest WAL segment in the archive"),
        out(
            "newest_wal_at",
            "when the newest WAL segment was stored: data committed after it is not yet recoverable",
        ),
        out(
            "wal_age_seconds",
            "how long ago that was: what a disaster now would lose, at least",
        ),
        out(
            "cipher",
            "the repository's encryption (`aes-256-cbc`, or `none`)",
        ),
    ];
    const READ_ONLY: When<Self> = When::Always;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;
    const RECOVERY_POINTS: &'static [(&'static str, &'static str)] =
        &[("wal", "newest_wal_at"), ("backup", "newest_backup_at")];

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let pgbr = Pgbr::from_exec(cx, &self.connection)?;
            let info = pgbr.info().await?;
            let wal_at = pgbr.newest_wal_at(&info).await?;
            let now = jiff::Timestamp::now();
            let age = |t: jiff::Timestamp| (now.as_second() - t.as_second()).max(0);
            let valid = info.backup.iter().filter(|b| b.error != Some(true));
            let newest = valid.clone().max_by_key(|b| b.timestamp.stop);
            let oldest = valid.min_by_key(|b| b.timestamp.stop);
            let archive = info.archive.last();
            if let Some(text) = self.covers.as_deref().filter(|c| !c.is_empty()) {
                let t = parse_time(text).map_err(ActionError::permanent)?;
                if let Some(why) = unreachable_time(&info, wal_at, t) {
                    return Err(ActionError::permanent(why));
                }
            }
            let limit =
                |d: Option<&DurationText>| d.map(crate::actions::support::duration).transpose();
            if let Some(max) = limit(self.max_wal_age.as_ref())? {
                match wal_at {
                    Some(w) if age(w) as u64 <= max.as_secs() => {}
                    Some(w) => {
                        return Err(ActionError::permanent(format!(
                            "the newest archived WAL was stored {w}, {} ago, more than max_wal_age {}: a disaster now would lose at least that much; is archiving working (`pgbackrest.check`)?",
                            crate::runbook::duration::format(std::time::Duration::from_secs(
                                age(w) as u64
                            )),
                            crate::runbook::duration::format(max)
                        )));
                    }
                    None => return Err(ActionError::permanent("the archive holds no WAL")),
                }
            }
            if let Some(max) = limit(self.max_backup_age.as_ref())? {
                match newest {
                    Some(b) if (now.as_second() - b.timestamp.stop) as u64 <= max.as_secs() => {}
                    Some(b) => {
                        return Err(ActionError::permanent(format!(
                            "the newest backup ({}) finished {}, more than max_backup_age {} ago",
                            b.label,
                            at(b.timestamp.stop),
                            crate::runbook::duration::format(max)
                        )));
                    }
                    None => {
                        return Err(ActionError::permanent(
                            "the repository holds no valid backup",
                        ));
                    }
                }
            }
            Ok(serde_json::json!({
                "backups": info.backup.len(),
                "newest_backup": newest.map(|b| b.outputs()),
                "newest_backup_at": newest.map(|b| at(b.timestamp.stop)),
                "newest_backup_age_seconds": newest.map(|b| (now.as_second() - b.timestamp.stop).max(0)),
                "recoverable_from": oldest.map(|b| at(b.timestamp.stop + 1)),
                "wal_min": archive.and_then(|a| a.min.clone()),
                "wal_max": archive.and_then(|a| a.max.clone()),
                "newest_wal_at": wal_at.map(|t| t.to_string()),
                "wal_age_seconds": wal_at.map(age),
                "cipher": info.cipher.clone().unwrap_or_else(|| "none".into()),
            }))
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        super::the_connection(&self.connection)
    }

    fn check(&self) -> Vec<WithProblem> {
        let mut p: Vec<WithProblem> = [
            WithProblem::duration("/max_wal_age", self.max_wal_age.as_ref()),
            WithProblem::duration("/max_backup_age", self.max_backup_age.as_ref()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Some(c) = self
            .covers
            .as_deref()
            .filter(|c| !c.is_empty() && !unknown_yet(c))
            && let Err(e) = parse_time(c)
        {
            p.push(WithProblem::new("/covers", e));
        }
        p
    }

    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let mut s = format!(
            "read the backups and WAL archive of {}",
            cx.connection(&self.connection)
        );
        if let Some(c) = self.covers.as_deref().filter(|c| !c.is_empty()) {
            s.push_str(&format!("; fail unless {c} can be recovered to"));
        }
        for (what, d) in [
            ("archived WAL", &self.max_wal_age),
            ("backup", &self.max_backup_age),
        ] {
            if let Some(d) = d.as_ref().and_then(|d| d.0.as_str()) {
                s.push_str(&format!("; fail if the newest {what} is older than {d}"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Effect;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn reads_only_and_says_what_it_checks() {
        let a = parse::<PgbackrestInfo>(
            json!({"connection": "repo", "covers": "2026-11-30T10:00:00Z", "max_wal_age": "15m"}),
        );
        assert_eq!(a.effect(), Effect::ReadOnly);
        assert!(a.check().is_empty());
        assert_eq!(
            a.describe(&Cx),
            "read the backups and WAL archive of <repo>; fail unless 2026-11-30T10:00:00Z can be recovered to; fail if the newest archived WAL is older than 15m"
        );
        let bad = parse::<PgbackrestInfo>(json!({"connection": "repo", "covers": "noon"}));
        assert_eq!(bad.check()[0].field, "/covers");
    }
}
