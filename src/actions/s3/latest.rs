//! `s3.latest`: the newest object under a prefix.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as s3, S3};
use crate::actions::support::backup_parts;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When,
    WithProblem, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Find the newest backup under `prefix` (manifests, parts and legacy `.sha256` files are not
/// backups); with `verified_only`, only one whose manifest says it was verified by a restore
/// test; with `before`, only one consistent at or before that time. Fails when there is none.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Latest {
    pub connection: String,
    pub prefix: String,
    /// Only keys ending with this (e.g. `.dump.zst.age`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    #[serde(default)]
    pub verified_only: bool,
    /// Only a backup consistent at or before this time (RFC 3339): the newest one before an
    /// incident, for recovery to a time with logical backups. The manifest's `consistent_at`
    /// decides; an object without one counts from when it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

impl ActionSpec for S3Latest {
    const NAME: &'static str = "s3.latest";
    const SUMMARY: &'static str =
        "Find the newest object (optionally verified backup) under a prefix";
    const OUTPUTS: &'static [Output] = &[
        out("key", "the newest object's key"),
        out("size", "its size in bytes"),
        out("last_modified", "when it was written (RFC 3339)"),
        out(
            "consistent_at",
            "the time its data is consistent with, from its manifest (else when it was written)",
        ),
        out("manifest", "its backup manifest, when it has one"),
    ];
    const READ_ONLY: When<Self> = When::Always;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let s3 = S3::from_exec(cx, &self.connection).await?;
            let before = match &self.before {
                Some(b) => Some(b.parse::<jiff::Timestamp>().map_err(|e| {
                    ActionError::permanent(format!("`before`: {b:?} is not an RFC 3339 time: {e}"))
                })?),
                None => None,
            };
            let mut all: Vec<_> = s3::list_all(&s3, &self.prefix, None)
                .await?
                .into_iter()
                .filter(|(k, ..)| backup_parts::is_backup_key(k))
                .filter(|(k, ..)| self.suffix.as_deref().is_none_or(|s| k.ends_with(s)))
                .collect();
            // Newest first; the key breaks ties, so the answer does not depend on list order.
            all.sort_by(|a, b| {
                b.2.as_ref()
                    .map(|t| (t.secs(), t.subsec_nanos()))
                    .cmp(&a.2.as_ref().map(|t| (t.secs(), t.subsec_nanos())))
                    .then_with(|| b.0.cmp(&a.0))
            });
            let mut skipped = 0;
            let mut later = 0;
            let mut best: Option<(jiff::Timestamp, serde_json::Value)> = None;
            for (key, size, at, _) in &all {
                let written = at
                    .as_ref()
                    .and_then(|t| jiff::Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok())
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                // A backup is consistent no later than it was written: once the best found is at
                // least as new as this one's writing, nothing older can beat it.
                if best.as_ref().is_some_and(|(t, _)| *t >= written) {
                    break;
                }
                let manifest = read_manifest(&s3, key).await?;
                let verified = manifest
                    .as_ref()
                    .and_then(|m| m.get("verified"))
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                if self.verified_only && !verified {
                    skipped += 1;
                    continue;
                }
                let consistent = manifest
                    .as_ref()
                    .and_then(|m| m.get("consistent_at"))
                    .and_then(|c| c.as_str())
                    .and_then(|c| c.parse::<jiff::Timestamp>().ok())
                    .unwrap_or(written);
                if before.is_some_and(|b| consistent > b) {
                    later += 1;
                    continue;
                }
                let found = serde_json::json!({
                    "key": key,
                    "size": size,
                    "last_modified": s3::rfc3339(at.as_ref()),
                    "consistent_at": consistent.to_string(),
                    "manifest": manifest,
                });
                if before.is_none() {
                    return Ok(found);
                }
                if best.as_ref().is_none_or(|(t, _)| consistent > *t) {
                    best = Some((consistent, found));
                }
            }
            if let Some((_, found)) = best {
                return Ok(found);
            }
            let what = if self.verified_only {
                "verified backup"
            } else {
                "object"
            };
            Err(ActionError::permanent(format!(
                "no {what} under s3://{}/{}{}",
                s3.bucket,
                self.prefix,
                match (skipped, later) {
                    (0, 0) => String::new(),
                    (s, 0) => format!(" ({s} found, none marked verified in its manifest)"),
                    (s, l) => format!(
                        " before {} ({l} newer{})",
                        self.before.as_deref().unwrap_or_default(),
                        if s > 0 {
                            format!(", {s} not verified")
                        } else {
                            String::new()
                        }
                    ),
                }
            )))
        })
    }

    fn check(&self) -> Vec<WithProblem> {
        super::key_problem("/prefix", &self.prefix, true)
            .into_iter()
            .collect()
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::S3])
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let what = if self.verified_only {
            "the newest verified backup"
        } else {
            "the newest object"
        };
        let mut suffix = self
            .suffix
            .as_deref()
            .map(|s| format!(" ending in {s}"))
            .unwrap_or_default();
        if let Some(b) = &self.before {
            suffix.push_str(&format!(", consistent at or before {b}"));
        }
        format!(
            "find {what} under {}{suffix} in {}",
            self.prefix,
            cx.connection(&self.connection)
        )
    }
}

/// The manifest beside a backup object, when there is one (one that is not JSON counts as none).
async fn read_manifest(s3: &S3, key: &str) -> Result<Option<serde_json::Value>, ActionError> {
    Ok(s3::get_optional(s3, &s3::manifest_key(key))
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes() {
        let d = describe::<S3Latest>(
            json!({"connection": "b", "prefix": "pg/orders/", "verified_only": true}),
        );
        assert_eq!(d, "find the newest verified backup under pg/orders/ in <b>");
    }
}
