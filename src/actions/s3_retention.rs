//! `s3.retention`: grandfather-father-son pruning of backups.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, ConnectionUse, DescribeContext, Effect, Output, WithProblem, out, shared::connection};
use crate::runbook::ConnectionKind;

/// Keep the newest `keep_last` objects under `prefix`, plus the newest of each of the last `hourly`
/// hours, `daily` days, `weekly` weeks and `monthly` months; delete the rest.
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
}

impl ActionSpec for S3Retention {
    const NAME: &'static str = "s3.retention";
    const SUMMARY: &'static str = "Prune backups under a prefix, grandfather-father-son";
    const OUTPUTS: &'static [Output] = &[out("kept", "keys kept"), out("deleted", "keys deleted")];

    fn effect(&self) -> Effect {
        Effect::Irreversible
    }
    fn destructive(&self) -> bool {
        true
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        vec![connection("/connection", &self.connection, &[ConnectionKind::S3])]
    }
    fn check(&self) -> Vec<WithProblem> {
        // A policy that keeps nothing would delete every backup: never what anyone means.
        if self.keep_last + self.hourly + self.daily + self.weekly + self.monthly == 0 {
            vec![WithProblem::new("", "this policy keeps nothing and would delete every backup; set keep_last or a period")]
        } else {
            vec![]
        }
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let mut keep = Vec::new();
        for (n, what) in [(self.keep_last, "newest"), (self.hourly, "hourly"), (self.daily, "daily"), (self.weekly, "weekly"), (self.monthly, "monthly")] {
            if n > 0 {
                keep.push(format!("{n} {what}"));
            }
        }
        format!(
            "delete objects under {} in {} except {} (the list is computed when the step runs)",
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

    #[test]
    fn refuses_to_keep_nothing() {
        assert_eq!(parse::<S3Retention>(json!({"connection": "b", "prefix": "p/"})).check().len(), 1);
        let d = describe::<S3Retention>(json!({"connection": "b", "prefix": "p/", "keep_last": 3, "daily": 7}));
        assert!(d.contains("except 3 newest, 7 daily"), "{d}");
    }
}
