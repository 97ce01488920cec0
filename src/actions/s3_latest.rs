//! `s3.latest`: the newest object under a prefix.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, ConnectionUse, DescribeContext, Effect, Output, out, shared::connection};
use crate::runbook::ConnectionKind;

/// Find the newest backup under `prefix`; with `verified_only`, only one whose manifest says it
/// was verified by a restore test. Fails when there is none.
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
}

impl ActionSpec for S3Latest {
    const NAME: &'static str = "s3.latest";
    const SUMMARY: &'static str = "Find the newest object (optionally verified backup) under a prefix";
    const OUTPUTS: &'static [Output] = &[
        out("key", "the newest object's key"),
        out("size", "its size in bytes"),
        out("last_modified", "when it was written (RFC 3339)"),
        out("manifest", "its backup manifest, when it has one"),
    ];

    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn destructive(&self) -> bool {
        false
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        vec![connection("/connection", &self.connection, &[ConnectionKind::S3])]
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let what = if self.verified_only { "the newest verified backup" } else { "the newest object" };
        let suffix = self.suffix.as_deref().map(|s| format!(" ending in {s}")).unwrap_or_default();
        format!("find {what} under {}{suffix} in {}", self.prefix, cx.connection(&self.connection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes() {
        let d = describe::<S3Latest>(json!({"connection": "b", "prefix": "pg/orders/", "verified_only": true}));
        assert_eq!(d, "find the newest verified backup under pg/orders/ in <b>");
    }
}
