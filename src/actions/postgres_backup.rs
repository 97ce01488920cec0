//! `postgres.backup`: pg_dump a database to a file or an object.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, BackupLocation, ConnectionUse, DescribeContext, Effect, Output, Tpl, WithProblem, out, shared::connection};
use crate::runbook::ConnectionKind;

/// Encrypt the backup with age: to `recipients` (public keys), or with a `passphrase`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Usually `{{ secrets.NAME }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passphrase: Option<String>,
}

/// Dump a database with pg_dump (custom format), compressed with zstd, optionally encrypted, to a
/// local file or an S3 object with a manifest beside it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresBackup {
    pub connection: String,
    /// The database to dump; the connection's database when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    pub to: BackupLocation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt: Option<Encryption>,
    /// zstd level, 1-19 (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 19))]
    pub compression_level: Option<u8>,
    /// Parallel jobs for pg_dump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<Tpl<u32>>,
}

impl ActionSpec for PostgresBackup {
    const NAME: &'static str = "postgres.backup";
    const SUMMARY: &'static str = "Dump a database (pg_dump custom format, zstd, optional age) to a file or S3";
    const OUTPUTS: &'static [Output] = &[
        out("path", "the local file, when `to.path` was given"),
        out("key", "the object key, when `to.key` was given"),
        out("size", "bytes written"),
        out("sha256", "SHA-256 of the bytes written"),
        out("server_version", "the PostgreSQL server version"),
        out("lsn", "WAL position the dump is consistent with"),
        out("consistent_at", "time the dump is consistent with (RFC 3339), for RPO"),
    ];

    fn effect(&self) -> Effect {
        Effect::Changes
    }
    fn destructive(&self) -> bool {
        false
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        let mut c = vec![connection("/connection", &self.connection, &[ConnectionKind::Postgres])];
        c.extend(self.to.connections("/to/connection"));
        c
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.to.check("/to");
        if let Some(e) = &self.encrypt
            && e.recipients.is_empty() == e.passphrase.is_none()
        {
            p.push(WithProblem::new("/encrypt", "give `recipients` or a `passphrase`, exactly one"));
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let db = self.database.as_deref().unwrap_or("the connection's database");
        let enc = match &self.encrypt {
            Some(e) if !e.recipients.is_empty() => format!(", encrypted to {} age recipient(s)", e.recipients.len()),
            Some(_) => ", encrypted with a passphrase".into(),
            None => String::new(),
        };
        format!("pg_dump {db} on {} to {} (zstd{enc})", cx.connection(&self.connection), self.to.describe(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_target_and_encryption() {
        let d = describe::<PostgresBackup>(json!({
            "connection": "db", "database": "orders",
            "to": {"connection": "b", "key": "pg/orders.dump"},
            "encrypt": {"recipients": ["age1xyz"]}
        }));
        assert_eq!(d, "pg_dump orders on <db> to object pg/orders.dump in <b> (zstd, encrypted to 1 age recipient(s))");
    }

    #[test]
    fn location_must_be_whole() {
        let b = parse::<PostgresBackup>(json!({"connection": "db", "to": {"connection": "b"}}));
        assert_eq!(b.check(), vec![WithProblem::new("/to", "`connection` needs a `key`")]);
        let b = parse::<PostgresBackup>(json!({"connection": "db", "to": {"path": "/x"}, "encrypt": {}}));
        assert_eq!(b.check()[0].field, "/encrypt");
    }
}
