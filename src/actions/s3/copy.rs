//! `s3.copy`: copy a backup (its objects, then its manifest) to another bucket or region.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::S3;
use crate::actions::backup::{StoredObject, stored};
use crate::actions::support::backup_parts;
use crate::actions::support::pipeline::transfer;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When,
    WithProblem, out,
};
use crate::runbook::ConnectionKind;

/// An object in a bucket.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectAt {
    /// An `s3` connection.
    pub connection: String,
    /// The object key; for `to`, the source's key when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Copy a backup to another bucket (another region, another account): every object it is made
/// of, each checked against its SHA-256, then its manifest (so a copy cut short has no manifest
/// and is nobody's backup). Server-side where both connections are the same S3 service and
/// account; streamed through this machine otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Copy {
    pub from: ObjectAt,
    pub to: ObjectAt,
    /// The storage class of the copies (e.g. `STANDARD_IA`); the bucket's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// Read every copied object back and check its SHA-256 (default true). A streamed copy is
    /// checked on the way either way; this checks what the destination stored.
    #[serde(default = "yes")]
    pub verify: bool,
}

fn yes() -> bool {
    true
}

impl ActionSpec for S3Copy {
    const NAME: &'static str = "s3.copy";
    const SUMMARY: &'static str =
        "Copy a backup (objects, then manifest) to another bucket or region, verified";
    const OUTPUTS: &'static [Output] = &[
        out("key", "the copy's key"),
        out(
            "objects",
            "objects copied (parts, a legacy `.sha256`), manifest aside",
        ),
        out("bytes", "bytes copied"),
        out("how", "`server-side` or `streamed`"),
        out(
            "manifest",
            "the copy's manifest key, when the backup has one",
        ),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    /// Copying again writes the same bytes; a different backup at the destination is refused.
    fn idempotent(&self) -> bool {
        true
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        vec![
            ConnectionUse {
                field: "/from/connection",
                name: &self.from.connection,
                kinds: &[ConnectionKind::S3],
            },
            ConnectionUse {
                field: "/to/connection",
                name: &self.to.connection,
                kinds: &[ConnectionKind::S3],
            },
        ]
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p = Vec::new();
        match &self.from.key {
            None => p.push(WithProblem::new("/from", "give the `key` of the backup")),
            Some(k) => p.extend(super::key_problem("/from/key", k, false)),
        }
        if let Some(k) = &self.to.key {
            p.extend(super::key_problem("/to/key", k, false));
        }
        if self.from.connection == self.to.connection
            && self
                .to
                .key
                .as_ref()
                .is_none_or(|k| Some(k) == self.from.key.as_ref())
        {
            p.push(WithProblem::new(
                "/to",
                "the copy would be the backup itself: give another connection or `key`",
            ));
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let from = self.from.key.as_deref().unwrap_or("?");
        let to = self.to.key.as_deref().unwrap_or(from);
        let class = self
            .storage_class
            .as_deref()
            .map(|c| format!(" as {c}"))
            .unwrap_or_default();
        format!(
            "copy backup {from} in {} and its parts to {to} in {}{class}, each checked against its SHA-256{}, then its manifest",
            cx.connection(&self.from.connection),
            cx.connection(&self.to.connection),
            if self.verify { " and read back" } else { "" }
        )
    }
    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(copy(self, cx))
    }
}

async fn copy(w: &S3Copy, cx: &Exec<'_>) -> Result<serde_json::Value, ActionError> {
    let key = w
        .from
        .key
        .as_deref()
        .ok_or_else(|| ActionError::permanent("give `from.key`"))?;
    let dkey = w.to.key.as_deref().unwrap_or(key);
    let src = S3::from_exec(cx, &w.from.connection).await?;
    let dst = S3::from_exec(cx, &w.to.connection).await?;
    let backup = stored(&src, key).await?;
    // Where each object goes: the parts follow the copy's key.
    let renamed = |i: usize| backup_parts::object_key(dkey, i);
    let mut manifest = backup.manifest.clone();
    if let Some(m) = &mut manifest {
        if let Some(parts) = m.get_mut("parts").and_then(|p| p.as_array_mut()) {
            for (i, p) in parts.iter_mut().enumerate() {
                p["key"] = renamed(i).into();
            }
            let list: Vec<backup_parts::Part> = serde_json::from_value(m["parts"].clone())
                .map_err(|e| ActionError::permanent(format!("the manifest's parts: {e}")))?;
            m["sha256"] = backup_parts::digest(&list).into();
        }
        m["copied_from"] = format!("s3://{}/{key}", src.bucket).into();
        if let Some(c) = &w.storage_class {
            m["storage_class"] = c.clone().into();
        }
    }
    let mkey = super::manifest_key(dkey);
    // A different backup under the destination's name is not replaced.
    if let (Some(m), Some(there)) = (&manifest, super::get_optional(&dst, &mkey).await?) {
        let there: serde_json::Value = serde_json::from_slice(&there).unwrap_or_default();
        if there.get("sha256") != m.get("sha256") {
            return Err(ActionError::permanent(format!(
                "s3://{}/{dkey} is another backup (its manifest says so); nothing was copied",
                dst.bucket
            )));
        }
    }
    let server_side = src.service == dst.service;
    let objects: Vec<(StoredObject, String)> = backup
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| (o.clone(), renamed(i)))
        .collect();
    let mut written = Vec::new();
    let mut bytes = 0u64;
    let copied: Result<(), ActionError> = async {
        for (o, to_key) in &objects {
            (cx.progress)(&format!("copying {} to {to_key}", o.key));
            if server_side {
                let size = match o.size {
                    Some(s) => s,
                    None => head_size(&src, &o.key).await?,
                };
                super::server_copy(&src, &o.key, size, &dst, to_key, w.storage_class.as_deref())
                    .await?;
                written.push(to_key.clone());
                bytes += size;
                if !w.verify {
                    continue;
                }
            } else {
                let up = transfer(
                    &src,
                    &o.key,
                    &o.sha256,
                    &dst,
                    to_key,
                    w.storage_class.as_deref(),
                    None,
                )
                .await?;
                written.push(to_key.clone());
                bytes += up.size;
                if !w.verify {
                    continue;
                }
            }
            let (_, sha) = super::stored_sha256(&dst, to_key).await?;
            if sha != o.sha256 {
                return Err(ActionError::permanent(format!(
                    "s3://{}/{to_key} reads back with SHA-256 {sha}, not {}: the copy is not the backup",
                    dst.bucket, o.sha256
                )));
            }
        }
        if let Some(sidecar) = &backup.sidecar {
            // The legacy checksum file: a line of text, read and written whole.
            let to_key = format!("{dkey}.sha256");
            let body = super::get_optional(&src, sidecar).await?.unwrap_or_default();
            dst.client
                .put_object()
                .bucket(&dst.bucket)
                .key(&to_key)
                .body(aws_sdk_s3::primitives::ByteStream::from(body))
                .send()
                .await
                .map_err(|e| {
                    crate::actions::support::aws::classify(&e, &format!("writing s3://{}/{to_key}", dst.bucket))
                })?;
            written.push(to_key);
        }
        if let Some(m) = &manifest {
            super::put_json(&dst, &mkey, m).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = copied {
        // What was written is nobody's backup without its manifest.
        let _ = super::delete_keys(&dst, &written, "removing a copy cut short").await;
        return Err(e);
    }
    Ok(serde_json::json!({
        "key": dkey,
        "objects": written.len(),
        "bytes": bytes,
        "how": if server_side { "server-side" } else { "streamed" },
        "manifest": manifest.as_ref().map(|_| mkey),
    }))
}

/// An object's size; a missing one is an error, as the backup said it was there.
async fn head_size(s3c: &S3, key: &str) -> Result<u64, ActionError> {
    super::get_optional_head(s3c, key)
        .await?
        .ok_or_else(|| ActionError::permanent(format!("s3://{}/{key} is not there", s3c.bucket)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_and_refuses_a_copy_onto_itself() {
        let d = describe::<S3Copy>(json!({
            "from": {"connection": "a", "key": "pg/1"}, "to": {"connection": "b"},
            "storage_class": "STANDARD_IA"
        }));
        assert_eq!(
            d,
            "copy backup pg/1 in <a> and its parts to pg/1 in <b> as STANDARD_IA, each checked against its SHA-256 and read back, then its manifest"
        );
        let same = parse::<S3Copy>(
            json!({"from": {"connection": "a", "key": "k"}, "to": {"connection": "a"}}),
        );
        assert_eq!(same.check()[0].field, "/to");
        let renamed = parse::<S3Copy>(
            json!({"from": {"connection": "a", "key": "k"}, "to": {"connection": "a", "key": "k2"}}),
        );
        assert!(renamed.check().is_empty());
    }
}
