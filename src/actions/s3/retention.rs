//! `s3.retention`: grandfather-father-son pruning of backups.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as s3, S3};
use crate::actions::support::backup_parts;
use crate::actions::{
    ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Effect, Exec, Output, When,
    WithProblem, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Keep the newest `keep_last` backups under `prefix`, every backup younger than `keep_days`,
/// plus the newest of each of the last `hourly` hours, `daily` days, `weekly` weeks and `monthly`
/// months; delete the rest, each with its manifest, its parts and a legacy `.sha256` beside it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Retention {
    pub connection: String,
    pub prefix: String,
    #[serde(default)]
    pub keep_last: u32,
    #[serde(default)]
    pub hourly: u32,
    #[serde(default)]
    pub daily: u32,
    #[serde(default)]
    pub weekly: u32,
    #[serde(default)]
    pub monthly: u32,
    /// Keep every backup written in the last this many days (30 in the source documents' rule).
    #[serde(default)]
    pub keep_days: u32,
    /// Compute and report what would be deleted (`would_delete`), delete nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// One object, by key and modification time (seconds since the epoch, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dated {
    pub key: String,
    pub at: i64,
}

impl S3Retention {
    /// Grandfather-father-son: the newest `keep_last`, then for each period kind the newest object
    /// of each of the last N distinct periods that hold one. Returns (kept, deleted), newest first.
    pub fn select(&self, mut objects: Vec<Dated>, now: i64) -> (Vec<Dated>, Vec<Dated>) {
        objects.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| b.key.cmp(&a.key)));
        let mut keep = vec![false; objects.len()];
        for k in keep.iter_mut().take(self.keep_last as usize) {
            *k = true;
        }
        let young = now - i64::from(self.keep_days) * 86_400;
        for (k, o) in keep.iter_mut().zip(&objects) {
            if o.at >= young && self.keep_days > 0 {
                *k = true;
            }
        }
        let period = |kind: u8, at: i64| -> (i64, i64) {
            let ts = jiff::Timestamp::from_second(at).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let d = ts.to_zoned(jiff::tz::TimeZone::UTC).date();
            match kind {
                0 => (at.div_euclid(3600), 0),
                1 => (d.year() as i64 * 1000 + d.day_of_year() as i64, 0),
                2 => {
                    let w = d.iso_week_date();
                    (w.year() as i64, w.week() as i64)
                }
                _ => (d.year() as i64, d.month() as i64),
            }
        };
        for (kind, n) in [
            (0u8, self.hourly),
            (1, self.daily),
            (2, self.weekly),
            (3, self.monthly),
        ] {
            let mut seen: Vec<(i64, i64)> = Vec::new();
            for (i, o) in objects.iter().enumerate() {
                if seen.len() >= n as usize {
                    break;
                }
                let p = period(kind, o.at);
                if !seen.contains(&p) {
                    seen.push(p);
                    keep[i] = true;
                }
            }
        }
        let (mut kept, mut deleted) = (Vec::new(), Vec::new());
        for (o, k) in objects.into_iter().zip(keep) {
            if k { kept.push(o) } else { deleted.push(o) }
        }
        (kept, deleted)
    }
}

impl ActionSpec for S3Retention {
    const NAME: &'static str = "s3.retention";
    const SUMMARY: &'static str = "Prune backups under a prefix, grandfather-father-son";
    const OUTPUTS: &'static [Output] = &[
        out("kept", "keys kept"),
        out("deleted", "keys deleted (with their manifests)"),
        out("would_delete", "with `dry_run`: the keys it would delete"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const CHANGES: Effect = Effect::Irreversible;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let s3c = S3::from_exec(cx, &self.connection).await?;
            let all = s3::list_all(&s3c, &self.prefix, None).await?;
            let manifests: std::collections::HashSet<String> = all
                .iter()
                .filter(|o| o.0.ends_with(".manifest.json"))
                .map(|o| o.0.clone())
                .collect();
            let present: std::collections::HashSet<&str> =
                all.iter().map(|o| o.0.as_str()).collect();
            let objects: Vec<Dated> = all
                .iter()
                .filter(|o| backup_parts::is_backup_key(&o.0))
                .map(|o| Dated {
                    key: o.0.clone(),
                    at: o.2.as_ref().map_or(0, |t| t.secs()),
                })
                .collect();
            let (kept, deleted) = self.select(objects, jiff::Timestamp::now().as_second());
            let keys = |v: &[Dated]| v.iter().map(|o| o.key.clone()).collect::<Vec<_>>();
            if self.dry_run {
                return Ok(
                    serde_json::json!({"kept": keys(&kept), "deleted": [], "would_delete": keys(&deleted)}),
                );
            }
            let mut doomed = Vec::new();
            for o in &deleted {
                // The manifest goes last: while a part is left, the manifest still says whose.
                doomed.push(o.key.clone());
                let mut n = 1;
                while present.contains(backup_parts::part_key(&o.key, n).as_str()) {
                    doomed.push(backup_parts::part_key(&o.key, n));
                    n += 1;
                }
                let sidecar = format!("{}.sha256", o.key);
                if present.contains(sidecar.as_str()) {
                    doomed.push(sidecar);
                }
                let m = s3::manifest_key(&o.key);
                if manifests.contains(&m) {
                    doomed.push(m);
                }
            }
            s3::delete_keys(
                &s3c,
                &doomed,
                &format!("pruning s3://{}/{}", s3c.bucket, self.prefix),
            )
            .await?;
            Ok(serde_json::json!({"kept": keys(&kept), "deleted": doomed, "would_delete": []}))
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::S3])
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p: Vec<WithProblem> = super::key_problem("/prefix", &self.prefix, true)
            .into_iter()
            .collect();
        // A policy that keeps nothing would delete every backup: never what anyone means.
        if self.keep_last + self.hourly + self.daily + self.weekly + self.monthly + self.keep_days
            == 0
        {
            p.push(WithProblem::new(
                "",
                "this policy keeps nothing and would delete every backup; set keep_last, keep_days or a period",
            ));
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let mut keep = Vec::new();
        for (n, what) in [
            (self.keep_last, "newest"),
            (self.hourly, "hourly"),
            (self.daily, "daily"),
            (self.weekly, "weekly"),
            (self.monthly, "monthly"),
        ] {
            if n > 0 {
                keep.push(format!("{n} {what}"));
            }
        }
        if self.keep_days > 0 {
            keep.push(format!("all of the last {} days", self.keep_days));
        }
        let verb = if self.dry_run {
            "list what it would delete under"
        } else {
            "delete objects under"
        };
        format!(
            "{verb} {} in {} except {} (the list is computed when the step runs)",
            self.prefix,
            cx.connection(&self.connection),
            keep.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    fn at(day: &str) -> i64 {
        let d: jiff::civil::DateTime = day.parse().unwrap();
        d.to_zoned(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp()
            .as_second()
    }

    #[test]
    fn grandfather_father_son() {
        // One backup a day at 01:00 for 70 days, plus three on the last day.
        let mut objects = Vec::new();
        let start = at("2026-01-01T01:00:00");
        for d in 0..70 {
            objects.push(Dated {
                key: format!("d{d:02}"),
                at: start + d * 86_400,
            });
        }
        for h in [3, 5, 7] {
            objects.push(Dated {
                key: format!("last-{h}"),
                at: start + 69 * 86_400 + h * 3600,
            });
        }
        let policy = parse::<S3Retention>(
            json!({"connection": "b", "prefix": "p/", "keep_last": 2, "daily": 7, "weekly": 4, "monthly": 3}),
        );
        let (kept, deleted) = policy.select(objects.clone(), start + 70 * 86_400);
        let kept: Vec<&str> = kept.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(kept.len() + deleted.len(), objects.len());
        // keep_last: the two newest.
        assert!(kept.starts_with(&["last-7", "last-5"]), "{kept:?}");
        // daily: the newest of each of the 7 newest days (the last day's is last-7).
        for d in 63..69 {
            assert!(
                kept.contains(&format!("d{d:02}").as_str()),
                "day {d}: {kept:?}"
            );
        }
        // weekly: four ISO weeks back from March 11 reach February 16 at the earliest, so nothing
        // from January survives but January's monthly.
        for d in 0..30 {
            assert!(
                !kept.contains(&format!("d{d:02}").as_str()),
                "day {d}: {kept:?}"
            );
        }
        // monthly: newest of March, February, January.
        assert!(
            kept.contains(&"d58"),
            "Feb 28 is February's newest: {kept:?}"
        );
        assert!(
            kept.contains(&"d30"),
            "Jan 31 is January's newest: {kept:?}"
        );
        // The oldest are gone.
        assert!(deleted.iter().any(|o| o.key == "d00"));
        // Nothing is kept twice, and the newest object is always kept.
        let mut uniq = kept.clone();
        uniq.dedup();
        assert_eq!(uniq.len(), kept.len());
    }

    #[test]
    fn keeps_every_backup_younger_than_keep_days() {
        let now = at("2026-03-01T00:00:00");
        let objects: Vec<Dated> = (0..100)
            .map(|h| Dated {
                key: format!("h{h:03}"),
                at: now - h * 12 * 3600,
            })
            .collect();
        let policy = parse::<S3Retention>(
            json!({"connection": "b", "prefix": "p/", "keep_days": 30, "monthly": 2}),
        );
        let (kept, deleted) = policy.select(objects, now);
        // 30 days at two a day: h000..=h060 (h060 is exactly 30 days old); the monthly newest
        // (March's h000, February's h001) are among them.
        let kept: Vec<&str> = kept.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(kept.len(), 61, "{kept:?}");
        assert!(kept.contains(&"h060") && !kept.contains(&"h061"));
        assert!(deleted.iter().all(|o| o.at < now - 30 * 86_400));
        let d =
            describe::<S3Retention>(json!({"connection": "b", "prefix": "p/", "keep_days": 30}));
        assert!(d.contains("except all of the last 30 days"), "{d}");
    }

    #[test]
    fn refuses_to_keep_nothing() {
        assert_eq!(
            parse::<S3Retention>(json!({"connection": "b", "prefix": "p/"}))
                .check()
                .len(),
            1
        );
        let d = describe::<S3Retention>(
            json!({"connection": "b", "prefix": "p/", "keep_last": 3, "daily": 7}),
        );
        assert!(d.contains("except 3 newest, 7 daily"), "{d}");
    }
}
