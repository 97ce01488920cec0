//! `backup.rekey`: re-encrypt a backup in S3 to new recipients (key rotation).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BackupLocation, stored};
use crate::actions::postgres::backup::Encryption;
use crate::actions::s3::{self, S3};
use crate::actions::support::backup_parts::{self, REKEYING};
use crate::actions::support::pipeline::transfer;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When,
    WithProblem, out,
};

/// Re-encrypt a backup to new age recipients (or a new passphrase), as key rotation asks (every
/// 90 days in the source documents). Each object is streamed: opened with `decrypt_with`,
/// sealed again (the zstd stream inside is kept), written beside the original, read back and
/// checked; only when every object is, the originals are replaced (server-side copies) and the
/// manifest updated. A run killed in the middle finishes on `resume`: what was to replace what
/// is in its log.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRekey {
    /// The backup, in S3 (`connection` + `key`), with its manifest beside it.
    pub from: BackupLocation,
    /// The identity or passphrase it is encrypted with now, usually `{{ secrets.NAME }}`.
    pub decrypt_with: String,
    /// What it is to be encrypted with.
    pub to: Encryption,
}

impl ActionSpec for BackupRekey {
    const NAME: &'static str = "backup.rekey";
    const SUMMARY: &'static str =
        "Re-encrypt a backup to new recipients (key rotation), verified before it replaces";
    const OUTPUTS: &'static [Output] = &[
        out("key", "the backup"),
        out("objects", "objects re-encrypted"),
        out(
            "sha256",
            "the backup's new SHA-256 (as the manifest now says)",
        ),
        out("encryption", "what it is encrypted with now"),
    ];
    const READ_ONLY: When<Self> = When::Never;
    const DESTRUCTIVE: When<Self> = When::Always;
    const RUNNABLE: bool = true;

    /// An attempt cut short before its note is done again from the start (the `.rekeying`
    /// objects are written again); one cut short after it carries on replacing from the note.
    fn idempotent(&self) -> bool {
        true
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        self.from.connections("/from/connection")
    }
    fn check(&self) -> Vec<WithProblem> {
        let mut p = self.from.check("/from");
        if self.from.path.is_some() {
            p.push(WithProblem::new(
                "/from",
                "backup.rekey re-encrypts a backup in S3: give `connection` and `key`",
            ));
        }
        if self.to.recipients.is_empty() == self.to.passphrase.is_none() {
            p.push(WithProblem::new(
                "/to",
                "give `recipients` or a `passphrase`, exactly one",
            ));
        }
        p
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let to = if self.to.recipients.is_empty() {
            "a new passphrase".to_string()
        } else {
            format!("{} age recipient(s)", self.to.recipients.len())
        };
        format!(
            "re-encrypt {} to {to}: each object streamed to a new object beside it and read back, then the originals replaced and the manifest updated",
            self.from.describe(cx)
        )
    }
    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(rekey(self, cx))
    }
}

async fn rekey(w: &BackupRekey, cx: &Exec<'_>) -> Result<serde_json::Value, ActionError> {
    let (Some(conn), Some(key)) = (&w.from.connection, &w.from.key) else {
        return Err(ActionError::permanent("give `from: {connection, key}`"));
    };
    let s3c = S3::from_exec(cx, conn).await?;
    let mkey = s3::manifest_key(key);
    // An attempt that got as far as replacing finishes that, from what it noted.
    let (manifest, objects) = match (cx.recall)("rekey") {
        Some(noted) => (
            noted["manifest"].clone(),
            serde_json::from_value::<Vec<(String, u64)>>(noted["objects"].clone())
                .map_err(|e| ActionError::permanent(format!("the noted rekey: {e}")))?,
        ),
        None => prepare(w, cx, &s3c, key).await?,
    };
    for (k, size) in &objects {
        let temp = format!("{k}{REKEYING}");
        // Gone already: an earlier attempt copied it and removed it.
        if s3::get_optional_head(&s3c, &temp).await?.is_none() {
            continue;
        }
        s3::server_copy(
            &s3c,
            &temp,
            *size,
            &s3c,
            k,
            manifest["storage_class"].as_str(),
        )
        .await?;
        s3::delete_keys(&s3c, &[temp], "removing a re-encrypted object put in place").await?;
    }
    s3::put_json(&s3c, &mkey, &manifest).await?;
    Ok(serde_json::json!({
        "key": key,
        "objects": objects.len(),
        "sha256": manifest["sha256"],
        "encryption": manifest["encryption"],
    }))
}

/// Writes every object re-encrypted beside its original and checks it; returns the manifest
/// to be and what replaces what, noted durably before anything is replaced.
async fn prepare(
    w: &BackupRekey,
    cx: &Exec<'_>,
    s3c: &S3,
    key: &str,
) -> Result<(serde_json::Value, Vec<(String, u64)>), ActionError> {
    let backup = stored(s3c, key).await?;
    let Some(mut manifest) = backup.manifest else {
        return Err(ActionError::permanent(format!(
            "s3://{}/{key} is a legacy backup (no manifest): restore it and back it up again to put it under a new key",
            s3c.bucket
        )));
    };
    if !manifest["encryption"]
        .as_str()
        .is_some_and(|e| e.starts_with("age-"))
    {
        return Err(ActionError::permanent(
            "the backup is not encrypted with age: there is no key to rotate",
        ));
    }
    let opener = Arc::new(crate::actions::postgres::restore::opener(
        Some(&w.decrypt_with),
        Some(&manifest),
    )?);
    let seal = w.to.seal()?;
    let class = manifest["storage_class"].as_str().map(String::from);
    let mut written = Vec::new();
    let mut replaced = Vec::new();
    let done: Result<(), ActionError> = async {
        for (i, o) in backup.objects.iter().enumerate() {
            let temp = format!("{}{REKEYING}", o.key);
            (cx.progress)(&format!("re-encrypting {}", o.key));
            let up = transfer(
                s3c,
                &o.key,
                &o.sha256,
                s3c,
                &temp,
                class.as_deref(),
                Some((opener.clone(), seal.clone())),
            )
            .await?;
            written.push(temp.clone());
            let (_, back) = s3::stored_sha256(s3c, &temp).await?;
            if back != up.sha256 {
                return Err(ActionError::permanent(format!(
                    "s3://{}/{temp} reads back with SHA-256 {back}, not the {} written",
                    s3c.bucket, up.sha256
                )));
            }
            if let Some(parts) = manifest.get_mut("parts").and_then(|p| p.as_array_mut()) {
                parts[i]["sha256"] = up.sha256.clone().into();
                parts[i]["size"] = up.size.into();
            } else {
                manifest["sha256"] = up.sha256.clone().into();
            }
            replaced.push((o.key.clone(), up.size));
        }
        Ok(())
    }
    .await;
    if let Err(e) = done {
        let _ = s3::delete_keys(
            s3c,
            &written,
            "removing re-encrypted objects of a failed rekey",
        )
        .await;
        return Err(ActionError {
            message: format!("{}; the backup was not changed", e.message),
            ..e
        });
    }
    if let Some(parts) = manifest.get("parts").cloned() {
        let list: Vec<backup_parts::Part> = serde_json::from_value(parts)
            .map_err(|e| ActionError::permanent(format!("the manifest's parts: {e}")))?;
        manifest["sha256"] = backup_parts::digest(&list).into();
    }
    manifest["size"] = replaced.iter().map(|(_, s)| s).sum::<u64>().into();
    manifest["encryption"] = seal.name().into();
    manifest["rekeyed_at"] = crate::runlog::now_rfc3339().into();
    manifest["rekeyed_by_run"] = cx.run_id.into();
    (cx.note)(
        "rekey",
        serde_json::json!({"manifest": manifest, "objects": replaced}),
    )
    .await?;
    Ok((manifest, replaced))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_and_needs_one_new_key() {
        let d = describe::<BackupRekey>(json!({
            "from": {"connection": "b", "key": "pg/1"}, "decrypt_with": "x",
            "to": {"recipients": ["age1a", "age1b"]}
        }));
        assert_eq!(
            d,
            "re-encrypt object pg/1 in <b> to 2 age recipient(s): each object streamed to a new object beside it and read back, then the originals replaced and the manifest updated"
        );
        let none = parse::<BackupRekey>(
            json!({"from": {"connection": "b", "key": "k"}, "decrypt_with": "x", "to": {}}),
        );
        assert_eq!(none.check()[0].field, "/to");
    }
}
