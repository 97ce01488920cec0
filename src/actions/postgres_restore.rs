//! `postgres.restore`: pg_restore a backup into a database.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, BackupLocation, ConnectionUse, DescribeContext, Effect, Output, Tpl, WithProblem, out, shared::connection};
use crate::runbook::ConnectionKind;

/// Restore a backup made by `postgres.backup` (or a legacy gzip+openssl dump) into a database. The
/// backup's checksum is verified before anything in the target is touched.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresRestore {
    pub connection: String,
    /// The target database; the connection's database when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub from: BackupLocation,
    /// Drop objects before recreating them.
    #[serde(default)]
    pub clean: bool,
    /// Create the database first.
    #[serde(default)]
    pub create: bool,
    /// Parallel jobs for pg_restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Tpl<u32>>,
    /// age identity (private key) or passphrase to decrypt with, usually `{{ secrets.NAME }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decrypt_with: Option<String>,
    /// Tables whose row counts are reported as outputs after the restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub count_tables: Vec<String>,
}

impl ActionSpec for PostgresRestore {
    const NAME: &'static str = "postgres.restore";
    const SUMMARY: &'static str = "Restore a verified backup into a database with pg_restore";
    const OUTPUTS: &'static [Output] = &[
        out("sha256", "SHA-256 of the backup, verified"),
        out("counts", "row counts of `count_tables`, by table"),
        out("consistent_at", "the time the restored data is consistent with, from the manifest"),
    ];

    fn effect(&self) -> Effect {
        Effect::Changes
    }
    fn destructive(&self) -> bool {
        true
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        let mut c = vec![connection("/connection", &self.connection, &[ConnectionKind::Postgres])];
        c.extend(self.from.connections("/from/connection"));
        c
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.from.check("/from");
        if let Some(Tpl::Value(0)) = self.jobs {
            p.push(WithProblem::new("/jobs", "`jobs` must be at least 1"));
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let db = self.database.as_deref().unwrap_or("the connection's database");
        let mut how = Vec::new();
        if self.create {
            how.push("create the database".to_string());
        }
        if self.clean {
            how.push("drop existing objects first".to_string());
        }
        if let Some(j) = &self.jobs {
            how.push(format!("{j} jobs"));
        }
        let how = if how.is_empty() { String::new() } else { format!(" ({})", how.join(", ")) };
        let counts = if self.count_tables.is_empty() {
            String::new()
        } else {
            format!("; then count rows of {}", self.count_tables.join(", "))
        };
        format!(
            "verify the checksum of {}, then pg_restore it into {db} on {}{how}{counts}",
            self.from.describe(cx),
            cx.connection(&self.connection)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_the_restore() {
        let d = describe::<PostgresRestore>(json!({
            "connection": "db", "database": "orders", "clean": true, "jobs": 2,
            "from": {"path": "/b/orders.dump"}, "count_tables": ["orders"]
        }));
        assert_eq!(
            d,
            "verify the checksum of file /b/orders.dump, then pg_restore it into orders on <db> \
             (drop existing objects first, 2 jobs); then count rows of orders"
        );
    }

    #[test]
    fn jobs_may_be_templated_but_not_zero() {
        let r = parse::<PostgresRestore>(json!({"connection": "db", "from": {"path": "x"}, "jobs": "{{ params.jobs }}"}));
        assert_eq!(r.jobs, Some(Tpl::Template("{{ params.jobs }}".into())));
        let r = parse::<PostgresRestore>(json!({"connection": "db", "from": {"path": "x"}, "jobs": 0}));
        assert_eq!(r.check()[0].field, "/jobs");
        assert!(reject::<PostgresRestore>(json!({"connection": "db", "from": {"path": "x"}, "jobs": "two"})).starts_with("/jobs"));
    }
}
