//! `s3.get`: download an object to a file.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::S3;
use crate::actions::support::aws;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When,
    WithProblem, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Download `key` to the local file `to`, verifying its checksum.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Get {
    pub connection: String,
    pub key: String,
    /// Local file to write.
    pub to: String,
}

impl ActionSpec for S3Get {
    const NAME: &'static str = "s3.get";
    const SUMMARY: &'static str = "Download an object to a local file, checksum verified";
    const OUTPUTS: &'static [Output] = &[
        out("path", "the file written"),
        out("size", "bytes downloaded"),
        out("sha256", "SHA-256 of the object"),
    ];
    const READ_ONLY: When<Self> = When::Always;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    /// Downloading again writes the same file.
    fn idempotent(&self) -> bool {
        true
    }

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            use sha2::Digest;
            use tokio::io::AsyncWriteExt;
            let s3 = S3::from_exec(cx, &self.connection).await?;
            let what = format!("downloading s3://{}/{}", s3.bucket, self.key);
            let out = s3
                .client
                .get_object()
                .bucket(&s3.bucket)
                .key(&self.key)
                .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                .send()
                .await
                .map_err(|e| aws::classify(&e, &what))?;
            let path = std::path::PathBuf::from(&self.to);
            let tmp =
                std::path::PathBuf::from(format!("{}.partial-{}", self.to, std::process::id()));
            let io =
                |e: std::io::Error| ActionError::permanent(format!("writing {}: {e}", self.to));
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
            let mut body = out.body;
            let mut h = sha2::Sha256::new();
            let mut size = 0u64;
            loop {
                match body.try_next().await {
                    Ok(Some(chunk)) => {
                        h.update(&chunk);
                        size += chunk.len() as u64;
                        file.write_all(&chunk).await.map_err(io)?;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&tmp).await;
                        return Err(ActionError::transient(format!("{what}: {e}")));
                    }
                }
            }
            file.sync_all().await.map_err(io)?;
            drop(file);
            tokio::fs::rename(&tmp, &path).await.map_err(io)?;
            Ok(serde_json::json!({
                "path": self.to,
                "size": size,
                "sha256": crate::runlog::hex(&h.finalize()),
            }))
        })
    }

    fn check(&self) -> Vec<WithProblem> {
        super::key_problem("/key", &self.key, false)
            .into_iter()
            .collect()
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::S3])
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        format!(
            "download {} from {} to {}",
            self.key,
            cx.connection(&self.connection),
            self.to
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
            describe::<S3Get>(json!({"connection": "b", "key": "k", "to": "/tmp/k"})),
            "download k from <b> to /tmp/k"
        );
        assert!(
            reject::<S3Get>(json!({"connection": "b", "key": "k"})).contains("missing field `to`")
        );
    }
}
