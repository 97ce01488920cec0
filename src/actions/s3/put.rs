//! `s3.put`: upload a file or a text as an object.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::S3;
use crate::actions::support::aws;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When,
    WithProblem, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Upload a local `file` or an inline `content` to `key`, with a SHA-256 checksum the server verifies.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Put {
    /// An `s3` connection.
    pub connection: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Refuse to replace an existing object.
    #[serde(default)]
    pub if_absent: bool,
    /// The storage class (e.g. `STANDARD_IA`); the bucket's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

impl ActionSpec for S3Put {
    const NAME: &'static str = "s3.put";
    const SUMMARY: &'static str = "Upload a file or text to an object, checksummed";
    const OUTPUTS: &'static [Output] = &[
        out("key", "the object key"),
        out("size", "bytes uploaded"),
        out("sha256", "SHA-256 of the object"),
        out("etag", "the object's ETag"),
        out("version_id", "the version id, on a versioned bucket"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::If {
        what: "without `if_absent`",
        test: |a| !a.if_absent,
    };
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            use aws_sdk_s3::primitives::ByteStream;
            use sha2::Digest;
            let s3 = S3::from_exec(cx, &self.connection).await?;
            // A file is hashed, then streamed from disk: memory does not grow with its size.
            let (body, sha, size) = match (&self.file, &self.content) {
                (Some(f), None) => {
                    let (sha, size) =
                        crate::actions::support::process::sha256_file(std::path::Path::new(f))
                            .map_err(|e| ActionError::permanent(format!("cannot read {f}: {e}")))?;
                    let body = ByteStream::from_path(f)
                        .await
                        .map_err(|e| ActionError::permanent(format!("cannot read {f}: {e}")))?;
                    (body, sha, size as usize)
                }
                (None, Some(c)) => {
                    let bytes = c.clone().into_bytes();
                    let sha = sha2::Sha256::digest(&bytes).to_vec();
                    let size = bytes.len();
                    (ByteStream::from(bytes), sha, size)
                }
                _ => return Err(ActionError::permanent("give `file` or `content`")),
            };
            use base64::Engine;
            let checksum = base64::engine::general_purpose::STANDARD.encode(&sha);
            let mut req = s3
                .client
                .put_object()
                .bucket(&s3.bucket)
                .key(&self.key)
                // The server checks this and refuses a body that does not match it.
                .checksum_sha256(checksum)
                .set_storage_class(
                    self.storage_class
                        .as_deref()
                        .map(aws_sdk_s3::types::StorageClass::from),
                )
                .body(body);
            if self.if_absent {
                req = req.if_none_match("*");
            }
            let out = req.send().await.map_err(|e| {
                aws::classify(&e, &format!("uploading s3://{}/{}", s3.bucket, self.key))
            })?;
            Ok(serde_json::json!({
                "key": self.key,
                "size": size,
                "sha256": crate::runlog::hex(&sha),
                "etag": out.e_tag(),
                "version_id": out.version_id(),
            }))
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::S3])
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p: Vec<WithProblem> = super::key_problem("/key", &self.key, false)
            .into_iter()
            .collect();
        if self.file.is_some() == self.content.is_some() {
            p.push(WithProblem::new(
                "",
                "give `file` or `content`, exactly one",
            ));
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let what = match (&self.file, &self.content) {
            (Some(f), _) => format!("file {f}"),
            (None, Some(c)) => format!("{} bytes of text", c.len()),
            _ => "nothing".into(),
        };
        let mode = if self.if_absent {
            "unless it exists"
        } else {
            "replacing any object there"
        };
        format!(
            "upload {what} to {} in {}, {mode}",
            self.key,
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
    fn one_source() {
        assert_eq!(
            parse::<S3Put>(json!({"connection": "b", "key": "k"}))
                .check()
                .len(),
            1
        );
        let d = describe::<S3Put>(
            json!({"connection": "b", "key": "k", "file": "/f", "if_absent": true}),
        );
        assert_eq!(d, "upload file /f to k in <b>, unless it exists");
    }
}
