//! The `backup.*` actions, and where a backup is (`BackupLocation`), which the actions that write
//! and read backups in other families (`postgres.backup`, `postgres.restore`) share.

pub mod verify;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::actions::{ConnectionUse, DescribeContext, WithProblem};
use crate::runbook::ConnectionKind;

/// Where a backup is: a local file (`path`) or an object (`connection` + `key`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupLocation {
    /// Local file path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// An `s3` connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Object key in the connection's bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl BackupLocation {
    pub fn connections(&self, field: &'static str) -> Vec<ConnectionUse<'_>> {
        self.connection
            .as_deref()
            .map(|name| ConnectionUse {
                field,
                name,
                kinds: &[ConnectionKind::S3],
            })
            .into_iter()
            .collect()
    }

    pub fn check(&self, field: &str) -> Vec<WithProblem> {
        if let Some(p) = self
            .key
            .as_deref()
            .and_then(|k| crate::actions::s3::key_problem(&format!("{field}/key"), k, false))
        {
            return vec![p];
        }
        match (&self.path, &self.connection, &self.key) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => vec![],
            (Some(_), _, _) => vec![WithProblem::new(
                field,
                "give either `path` (a local file) or `connection` and `key` (an object), not both",
            )],
            (None, Some(_), None) => vec![WithProblem::new(field, "`connection` needs a `key`")],
            (None, None, Some(_)) => {
                vec![WithProblem::new(
                    field,
                    "`key` needs the `connection` of the bucket",
                )]
            }
            (None, None, None) => vec![WithProblem::new(
                field,
                "give `path` (a local file) or `connection` and `key` (an object)",
            )],
        }
    }

    pub fn describe(&self, cx: &dyn DescribeContext) -> String {
        match (&self.path, &self.connection, &self.key) {
            (Some(p), _, _) => format!("file {p}"),
            (None, Some(c), Some(k)) => format!("object {k} in {}", cx.connection(c)),
            _ => "(incomplete location)".into(),
        }
    }
}
