//! `pgbackrest.expire`: apply retention, or list what it would remove.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Pgbr;
use crate::actions::{
    ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Effect, Exec, Output, PreviewFuture,
    Tpl, When, WithProblem, out,
};

/// Remove the backups and WAL that retention no longer keeps (`pgbackrest expire`). Retention
/// is the configuration's unless given here. With `dry_run`, nothing is removed and the outputs
/// list what would be; `plan --live` shows that list too.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgbackrestExpire {
    /// A `pgbackrest` connection.
    pub connection: String,
    /// How many full backups to keep (`repo-retention-full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_full: Option<Tpl<u32>>,
    /// How many differential backups to keep (`repo-retention-diff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_diff: Option<Tpl<u32>>,
    /// For how many backups to keep WAL for point-in-time recovery (`repo-retention-archive`);
    /// WAL older than that is kept only as far as those backups need to be consistent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_archive: Option<Tpl<u32>>,
    /// List what would be removed; remove nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<Tpl<bool>>,
}

impl PgbackrestExpire {
    fn dry(&self) -> bool {
        matches!(self.dry_run, Some(Tpl::Value(true)))
    }

    fn options(&self, pgbr: &Pgbr) -> Vec<String> {
        let n = pgbr.repo_index();
        let mut o = Vec::new();
        for (name, v) in [
            ("full", &self.retention_full),
            ("diff", &self.retention_diff),
            ("archive", &self.retention_archive),
        ] {
            if let Some(Tpl::Value(v)) = v {
                o.push(format!("--repo{n}-retention-{name}={v}"));
            }
        }
        o
    }

    async fn expire(
        &self,
        pgbr: &Pgbr,
        dry: bool,
    ) -> Result<serde_json::Value, crate::actions::ActionError> {
        let mut options = self.options(pgbr);
        if dry {
            options.push("--dry-run".into());
        }
        let said = pgbr.run("expire", &options).await?;
        let mut expired: Vec<String> = Vec::new();
        let mut archive: Vec<String> = Vec::new();
        for line in said.lines() {
            let Some((_, what)) = line.split_once("INFO: ") else {
                continue;
            };
            let what = what.trim_start_matches("[DRY-RUN] ");
            if what.contains("remove archive") {
                archive.push(what.to_string());
            } else if what.contains("expire ") && what.contains("backup") {
                expired.extend(
                    what.split([' ', ','])
                        .filter(|w| is_label(w))
                        .map(String::from),
                );
            }
        }
        expired.dedup();
        Ok(serde_json::json!({"dry_run": dry, "expired": expired, "archive_removed": archive}))
    }
}

/// A backup label: `20261130-223042F`, or `..._20261130-223129I` / `D`.
fn is_label(w: &str) -> bool {
    let b = w.as_bytes();
    b.len() >= 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && matches!(b[b.len() - 1], b'F' | b'D' | b'I')
}

impl ActionSpec for PgbackrestExpire {
    const NAME: &'static str = "pgbackrest.expire";
    const SUMMARY: &'static str =
        "Remove backups and WAL past retention (or list them, with dry_run)";
    const OUTPUTS: &'static [Output] = &[
        out(
            "expired",
            "labels of the backups removed (or that would be)",
        ),
        out(
            "archive_removed",
            "WAL ranges removed (or that would be), as pgBackRest states them",
        ),
        out("dry_run", "whether nothing was removed"),
    ];
    const READ_ONLY: When<Self> = When::If {
        what: "with `dry_run: true`",
        test: PgbackrestExpire::dry,
    };
    const CHANGES: Effect = Effect::Irreversible;
    const DESTRUCTIVE: When<Self> = When::If {
        what: "without `dry_run: true`",
        test: |a| !a.dry(),
    };
    const RUNNABLE: bool = true;
    const PREVIEWS: bool = true;

    fn idempotent(&self) -> bool {
        // Expiring what is already expired removes nothing.
        true
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let pgbr = Pgbr::from_exec(cx, &self.connection)?;
            self.expire(&pgbr, self.dry()).await
        })
    }

    fn preview<'a>(&'a self, cx: &'a Exec<'a>) -> Option<PreviewFuture<'a>> {
        Some(Box::pin(async move {
            let pgbr = Pgbr::from_exec(cx, &self.connection)?;
            let r = self.expire(&pgbr, true).await?;
            let list = |k: &str| {
                r[k].as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "nothing".into())
            };
            Ok(format!(
                "would remove backups: {}; WAL: {}",
                list("expired"),
                list("archive_removed")
            ))
        }))
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        super::the_connection(&self.connection)
    }

    fn check(&self) -> Vec<WithProblem> {
        [
            ("/retention_full", &self.retention_full),
            ("/retention_diff", &self.retention_diff),
            ("/retention_archive", &self.retention_archive),
        ]
        .into_iter()
        .filter(|(_, v)| matches!(v, Some(Tpl::Value(0))))
        .map(|(f, _)| WithProblem::new(f, "must be at least 1: 0 would remove every backup"))
        .collect()
    }

    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let mut keep: Vec<String> = Vec::new();
        for (what, v) in [
            ("full backups", &self.retention_full),
            ("differential backups", &self.retention_diff),
            ("backups' WAL", &self.retention_archive),
        ] {
            match v {
                Some(Tpl::Value(n)) => keep.push(format!("{n} {what}")),
                Some(Tpl::Template(t)) => keep.push(format!("{t} {what}")),
                None => {}
            }
        }
        let retention = if keep.is_empty() {
            "the configuration's retention".to_string()
        } else {
            format!("keeping {}", keep.join(", "))
        };
        if self.dry() {
            format!(
                "list what expiring {} ({retention}) would remove; remove nothing",
                cx.connection(&self.connection)
            )
        } else {
            format!(
                "remove the backups and WAL of {} past retention ({retention}); they cannot be brought back",
                cx.connection(&self.connection)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn dry_run_only_reads() {
        let a = parse::<PgbackrestExpire>(
            json!({"connection": "repo", "retention_full": 2, "dry_run": true}),
        );
        assert_eq!(a.effect(), Effect::ReadOnly);
        assert!(!a.destructive());
        assert_eq!(
            a.describe(&Cx),
            "list what expiring <repo> (keeping 2 full backups) would remove; remove nothing"
        );
        let b = parse::<PgbackrestExpire>(json!({"connection": "repo"}));
        assert_eq!(b.effect(), Effect::Irreversible);
        assert!(b.destructive());
        let z = parse::<PgbackrestExpire>(json!({"connection": "repo", "retention_full": 0}));
        assert_eq!(z.check()[0].field, "/retention_full");
    }

    #[test]
    fn labels_are_recognised() {
        assert!(is_label("20261130-223042F"));
        assert!(is_label("20261130-223042F_20261130-223129I"));
        assert!(!is_label("repo1:"));
        assert!(!is_label("000000010000000000000001"));
    }
}
