//! The `backup.*` actions, and where a backup is (`BackupLocation`), which the actions that write
//! and read backups in other families (`postgres.backup`, `postgres.restore`) share.

pub mod rekey;
pub mod verify;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::actions::{ConnectionUse, DescribeContext, WithProblem};
use crate::runbook::ConnectionKind;

/// Where a backup is: a local file (`path`) or an object (`connection` + `key`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupLocation {
    /// Local file path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// An `s3` connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Object key in the connection's bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl BackupLocation {
    pub fn connections(&self, field: &'static str) -> Vec<ConnectionUse<'_>> {
        self.connection
            .as_deref()
            .map(|name| ConnectionUse {
                field,
                name,
                kinds: &[ConnectionKind::S3],
            })
            .into_iter()
            .collect()
    }

    pub fn check(&self, field: &str) -> Vec<WithProblem> {
        if let Some(p) = self
            .key
            .as_deref()
            .and_then(|k| crate::actions::s3::key_problem(&format!("{field}/key"), k, false))
        {
            return vec![p];
        }
        match (&self.path, &self.connection, &self.key) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => vec![],
            (Some(_), _, _) => vec![WithProblem::new(
                field,
                "give either `path` (a local file) or `connection` and `key` (an object), not both",
            )],
            (None, Some(_), None) => vec![WithProblem::new(field, "`connection` needs a `key`")],
            (None, None, Some(_)) => {
                vec![WithProblem::new(
                    field,
                    "`key` needs the `connection` of the bucket",
                )]
            }
            (None, None, None) => vec![WithProblem::new(
                field,
                "give `path` (a local file) or `connection` and `key` (an object)",
            )],
        }
    }

    /// For an action that reads or writes backups in S3 only: why a local `path` cannot run.
    pub fn s3_only(&self, action: &str, field: &str, verb: &str) -> Option<String> {
        self.path.as_ref().map(|_| {
            format!(
                "`{action}` {verb} S3 (`{field}: {{connection, key}}`); a local file is not supported"
            )
        })
    }

    pub fn describe(&self, cx: &dyn DescribeContext) -> String {
        match (&self.path, &self.connection, &self.key) {
            (Some(p), _, _) => format!("file {p}"),
            (None, Some(c), Some(k)) => format!("object {k} in {}", cx.connection(c)),
            _ => "(incomplete location)".into(),
        }
    }
}

/// Refuses a backup whose SHA-256 is not the one the step expects (`sha256:` in its `with`),
/// before anything is touched.
pub fn expect_sha256(want: Option<&String>, got: &str) -> Result<(), crate::actions::ActionError> {
    match want {
        Some(want) if !want.eq_ignore_ascii_case(got) => {
            Err(crate::actions::ActionError::permanent(format!(
                "the backup's SHA-256 is {got}, expected {want}: not the backup meant; nothing was restored"
            )))
        }
        _ => Ok(()),
    }
}

/// One object a backup in S3 is made of, with what its bytes must hash to.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub key: String,
    pub sha256: String,
    pub size: Option<u64>,
}

/// A backup in S3 as its manifest (or the legacy scripts' `.sha256`) describes it.
pub struct Stored {
    pub manifest: Option<serde_json::Value>,
    /// In the manifest's order: the backup's own key first.
    pub objects: Vec<StoredObject>,
    /// The legacy scripts' `<key>.sha256`, when that is what vouches for the backup.
    pub sidecar: Option<String>,
}

/// The manifest beside a backup, `None` when there is none; one that is not JSON is an error
/// (a damaged manifest must not pass for a backup without one).
pub async fn read_manifest(
    s3c: &crate::actions::s3::S3,
    key: &str,
) -> Result<Option<serde_json::Value>, crate::actions::ActionError> {
    let mkey = crate::actions::s3::manifest_key(key);
    match crate::actions::s3::get_optional(s3c, &mkey).await? {
        Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            crate::actions::ActionError::permanent(format!("the manifest {mkey} is not JSON: {e}"))
        }),
        None => Ok(None),
    }
}

/// Reads what a backup is made of and checks the manifest holds together; refuses a backup with
/// nothing to verify its bytes against.
pub async fn stored(
    s3c: &crate::actions::s3::S3,
    key: &str,
) -> Result<Stored, crate::actions::ActionError> {
    use crate::actions::ActionError;
    use crate::actions::support::backup_parts;
    let mkey = crate::actions::s3::manifest_key(key);
    let Some(m) = read_manifest(s3c, key).await? else {
        let Some(sha) = crate::actions::postgres::restore::legacy_checksum(s3c, key).await? else {
            return Err(ActionError::permanent(format!(
                "s3://{}/{key} has no manifest and no `.sha256` beside it: nothing to verify it by",
                s3c.bucket
            )));
        };
        return Ok(Stored {
            manifest: None,
            objects: vec![StoredObject {
                key: key.to_string(),
                sha256: sha,
                size: None,
            }],
            sidecar: Some(format!("{key}.sha256")),
        });
    };
    let objects = match backup_parts::from_manifest(key, &m)
        .map_err(|e| ActionError::permanent(format!("s3://{}/{mkey}: {e}", s3c.bucket)))?
    {
        Some(parts) => parts
            .into_iter()
            .map(|p| StoredObject {
                key: p.key,
                sha256: p.sha256,
                size: Some(p.size),
            })
            .collect(),
        None => vec![StoredObject {
            key: key.to_string(),
            sha256: m
                .get("sha256")
                .and_then(|s| s.as_str())
                .ok_or_else(|| {
                    ActionError::permanent(format!("the manifest {mkey} records no sha256"))
                })?
                .to_string(),
            size: m.get("size").and_then(|s| s.as_u64()),
        }],
    };
    Ok(Stored {
        manifest: Some(m),
        objects,
        sidecar: None,
    })
}

/// A backup streamed to one object, as [`record`] writes down.
pub struct Written<'a> {
    pub s3: &'a crate::actions::s3::S3,
    pub key: &'a str,
    pub level: i32,
    pub seal: &'a crate::actions::support::pipeline::Seal,
    pub sealed: &'a crate::actions::support::pipeline::Sealed,
    pub storage_class: Option<&'a str>,
}

/// Writes the manifest beside a backup streamed to one object: `manifest` (what the action
/// knows, its `format` first) and what every such backup records (compression, encryption,
/// sizes, SHA-256, storage class, lifeboat's version); returns `outputs` with the outputs every
/// such backup has (`key`, `size`, `plain_size`, `sha256`, `manifest`).
pub async fn record(
    w: Written<'_>,
    mut manifest: serde_json::Value,
    mut outputs: serde_json::Value,
) -> Result<serde_json::Value, crate::actions::ActionError> {
    use serde_json::json;
    let m = manifest.as_object_mut().expect("the manifest is an object");
    for (k, v) in [
        ("compression", json!(format!("zstd:{}", w.level))),
        ("encryption", json!(w.seal.name())),
        ("plain_size", json!(w.sealed.plain_size)),
        ("size", json!(w.sealed.size)),
        ("sha256", json!(w.sealed.sha256)),
        ("storage_class", json!(w.storage_class)),
        ("lifeboat", json!(env!("CARGO_PKG_VERSION"))),
    ] {
        m.insert(k.into(), v);
    }
    let mkey = crate::actions::s3::manifest_key(w.key);
    crate::actions::s3::put_json(w.s3, &mkey, &manifest).await?;
    let o = outputs.as_object_mut().expect("the outputs are an object");
    for (k, v) in [
        ("key", json!(w.key)),
        ("size", json!(w.sealed.size)),
        ("plain_size", json!(w.sealed.plain_size)),
        ("sha256", json!(w.sealed.sha256)),
        ("manifest", json!(mkey)),
    ] {
        o.insert(k.into(), v);
    }
    Ok(outputs)
}
