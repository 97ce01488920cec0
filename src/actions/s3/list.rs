//! `s3.list`: list objects under a prefix.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as s3, S3};
use crate::actions::{
    ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When, WithProblem, out,
    support::the_connection,
};
use crate::runbook::ConnectionKind;

/// List the objects under `prefix`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3List {
    pub connection: String,
    #[serde(default)]
    pub prefix: String,
    /// At most this many objects (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub limit: Option<u32>,
}

impl ActionSpec for S3List {
    const NAME: &'static str = "s3.list";
    const SUMMARY: &'static str = "List objects under a prefix, newest first";
    const OUTPUTS: &'static [Output] = &[
        out(
            "objects",
            "objects, each with key, size, last_modified, etag",
        ),
        out("keys", "just the keys"),
        out("count", "number of objects listed"),
    ];
    const READ_ONLY: When<Self> = When::Always;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let s3 = S3::from_exec(cx, &self.connection).await?;
            let all = s3::list_all(&s3, &self.prefix, self.limit.map(|l| l as usize)).await?;
            let objects: Vec<serde_json::Value> = all
                .iter()
                .map(|(k, size, at, etag)| serde_json::json!({"key": k, "size": size, "last_modified": s3::rfc3339(at.as_ref()), "etag": etag}))
                .collect();
            let keys: Vec<&str> = all.iter().map(|o| o.0.as_str()).collect();
            Ok(serde_json::json!({"objects": objects, "keys": keys, "count": all.len()}))
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
        let prefix = if self.prefix.is_empty() {
            "the bucket root".to_string()
        } else {
            self.prefix.clone()
        };
        format!(
            "list objects under {prefix} in {}",
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
    fn describes() {
        assert_eq!(
            describe::<S3List>(json!({"connection": "b", "prefix": "pg/"})),
            "list objects under pg/ in <b>"
        );
    }
}
