//! `s3.get`: download an object to a file.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, ConnectionUse, DescribeContext, Effect, Output, out, shared::connection};
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
        format!("download {} from {} to {}", self.key, cx.connection(&self.connection), self.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes() {
        assert_eq!(describe::<S3Get>(json!({"connection": "b", "key": "k", "to": "/tmp/k"})), "download k from <b> to /tmp/k");
        assert!(reject::<S3Get>(json!({"connection": "b", "key": "k"})).contains("missing field `to`"));
    }
}
