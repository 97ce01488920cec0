//! `s3.delete`: delete objects.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::s3::{self, S3};
use super::{ActionError, ActionFuture, Exec, ActionSpec, ConnectionUse, DescribeContext, Effect, Output, WithProblem, out, shared::connection};
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
    const RUNNABLE: bool = true;

    /// Deleting what is gone already is not an error.
    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            use aws_sdk_s3::types::{Delete, ObjectIdentifier};
            let s3 = S3::from_exec(cx, &self.connection).await?;
            let mut deleted = Vec::new();
            for batch in self.keys.chunks(1000) {
                let ids = batch
                    .iter()
                    .map(|k| ObjectIdentifier::builder().key(k).build())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ActionError::permanent(e.to_string()))?;
                let del = Delete::builder().set_objects(Some(ids)).build().map_err(|e| ActionError::permanent(e.to_string()))?;
                let out = s3
                    .client
                    .delete_objects()
                    .bucket(&s3.bucket)
                    .delete(del)
                    .send()
                    .await
                    .map_err(|e| s3::classify(&e, &format!("deleting from s3://{}", s3.bucket)))?;
                if let Some(err) = out.errors().first() {
                    return Err(ActionError::permanent(format!(
                        "deleting {}: {}",
                        err.key().unwrap_or("?"),
                        err.message().unwrap_or(err.code().unwrap_or("refused"))
                    )));
                }
                deleted.extend(out.deleted().iter().filter_map(|d| d.key().map(String::from)));
            }
            Ok(serde_json::json!({"deleted": deleted}))
        })
    }

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
        if self.keys.is_empty() { vec![WithProblem::new("/keys", "name at least one key")] } else { vec![] }
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        format!("delete {} from {}", self.keys.join(", "), cx.connection(&self.connection))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes() {
        assert_eq!(describe::<S3Delete>(json!({"connection": "b", "keys": ["a", "b"]})), "delete a, b from <b>");
        assert_eq!(parse::<S3Delete>(json!({"connection": "b", "keys": []})).check().len(), 1);
    }
}
