//! `with` pieces that several actions share.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConnectionUse, DescribeContext, WithProblem};
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

/// A Kubernetes workload, named by exactly one of the `deployment` and `statefulset` fields that
/// the Kubernetes actions carry (kept as plain fields: serde's `flatten` would lose error locations).
pub struct Workload<'a> {
    pub deployment: Option<&'a str>,
    pub statefulset: Option<&'a str>,
}

impl Workload<'_> {
    pub fn check(&self) -> Vec<WithProblem> {
        match (self.deployment, self.statefulset) {
            (Some(_), None) | (None, Some(_)) => vec![],
            (Some(_), Some(_)) => {
                vec![WithProblem::new(
                    "",
                    "give `deployment` or `statefulset`, not both",
                )]
            }
            (None, None) => vec![WithProblem::new(
                "",
                "give the `deployment` or `statefulset` to act on",
            )],
        }
    }
}

impl std::fmt::Display for Workload<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.deployment, self.statefulset) {
            (Some(d), _) => write!(f, "deployment {d}"),
            (None, Some(s)) => write!(f, "statefulset {s}"),
            (None, None) => f.write_str("(no workload)"),
        }
    }
}

pub fn connection<'a>(
    field: &'static str,
    name: &'a str,
    kinds: &'static [ConnectionKind],
) -> ConnectionUse<'a> {
    ConnectionUse { field, name, kinds }
}

/// Parses a duration field (validation already checked its text).
pub fn duration(
    d: &crate::runbook::DurationText,
) -> Result<std::time::Duration, super::ActionError> {
    let text =
        d.0.as_str()
            .ok_or_else(|| super::ActionError::permanent("a duration must be a string"))?;
    crate::runbook::duration::parse(text).map_err(super::ActionError::permanent)
}

/// Parses a duration field, or the default.
pub fn duration_or(
    d: Option<&crate::runbook::DurationText>,
    default: std::time::Duration,
) -> Result<std::time::Duration, super::ActionError> {
    d.map_or(Ok(default), duration)
}

/// An error and its sources, joined with `: `: the outermost message of a client library
/// ("error sending request") alone rarely says what went wrong.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s
}
