//! `s3.delete`: delete objects.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{self as s3, S3};
use crate::actions::{
    ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Effect, Exec, Output, When,
    WithProblem, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Delete the listed objects. Cannot be undone on an unversioned bucket.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Delete {
    pub connection: String,
    pub keys: Vec<String>,
}

impl ActionSpec for S3Delete {
    const NAME: &'static str = "s3.delete";
    const SUMMARY: &'static str = "Delete objects";
    const OUTPUTS: &'static [Output] = &[out("deleted", "the keys deleted")];
    const READ_ONLY: When<Self> = When::Never;
    const CHANGES: Effect = Effect::Irreversible;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;

    /// Deleting what is gone already is not an error.
    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let s3 = S3::from_exec(cx, &self.connection).await?;
            let deleted = s3::delete_keys(
                &s3,
                &self.keys,
                &format!("deleting from s3://{}", s3.bucket),
            )
            .await?;
            Ok(serde_json::json!({"deleted": deleted}))
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::S3])
    }
    fn check(&self) -> Vec<WithProblem> {
        if self.keys.is_empty() {
            return vec![WithProblem::new("/keys", "name at least one key")];
        }
        self.keys
            .iter()
            .enumerate()
            .filter_map(|(i, k)| super::key_problem(&format!("/keys/{i}"), k, false))
            .collect()
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        format!(
            "delete {} from {}",
            self.keys.join(", "),
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
            describe::<S3Delete>(json!({"connection": "b", "keys": ["a", "b"]})),
            "delete a, b from <b>"
        );
        assert_eq!(
            parse::<S3Delete>(json!({"connection": "b", "keys": []}))
                .check()
                .len(),
            1
        );
    }
}
