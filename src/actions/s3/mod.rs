//! What the S3 actions share: a client for a rendered `s3` connection (aws-sdk-s3 on a
//! rustls/ring HTTP client, never the SDK's default stack) and object listing.

pub mod copy;
pub mod delete;
pub mod get;
pub mod latest;
pub mod list;
pub mod put;
pub mod retention;

use serde_json::Value;

use crate::actions::support::aws::{classify, sdk_config};
use crate::actions::{ActionError, Exec};

#[derive(Clone)]
pub struct S3 {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
    /// Which S3 service and account this is (endpoint, region, access key id): two connections
    /// with the same `service` can copy server-side.
    pub service: String,
}

impl S3 {
    pub async fn from_exec(cx: &Exec<'_>, name: &str) -> Result<S3, ActionError> {
        let fields = (cx.connection)(name).map_err(ActionError::permanent)?;
        let get = |k: &str| fields.get(k).and_then(Value::as_str).map(String::from);
        let bucket = get("bucket")
            .ok_or_else(|| ActionError::permanent(format!("connection `{name}` has no bucket")))?;
        let shared = sdk_config(&fields).await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(e) = get("endpoint") {
            b = b.endpoint_url(e);
        }
        if fields
            .get("path_style")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            b = b.force_path_style(true);
        }
        let service = format!(
            "{}|{}|{}",
            get("endpoint").unwrap_or_default(),
            get("region").unwrap_or_default(),
            get("access_key_id").unwrap_or_default()
        );
        Ok(S3 {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket,
            service,
        })
    }
}

pub fn rfc3339(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<String> {
    t.and_then(|t| t.fmt(aws_sdk_s3::primitives::DateTimeFormat::DateTime).ok())
}

/// The manifest key beside a backup object.
pub fn manifest_key(key: &str) -> String {
    format!("{key}.manifest.json")
}

/// Every object under a prefix: (key, size, last modified, etag).
pub async fn list_all(
    s3: &S3,
    prefix: &str,
    limit: Option<usize>,
) -> Result<
    Vec<(
        String,
        i64,
        Option<aws_sdk_s3::primitives::DateTime>,
        Option<String>,
    )>,
    ActionError,
> {
    let mut out = Vec::new();
    let mut pages = s3
        .client
        .list_objects_v2()
        .bucket(&s3.bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| classify(&e, &format!("listing s3://{}/{prefix}", s3.bucket)))?;
        for o in page.contents() {
            out.push((
                o.key().unwrap_or_default().to_string(),
                o.size().unwrap_or(0),
                o.last_modified().cloned(),
                o.e_tag().map(String::from),
            ));
            if limit.is_some_and(|l| out.len() >= l) {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Deletes keys, 1,000 per request (S3's limit); returns the keys the server reports deleted.
/// Any per-key error fails the whole call: a retention that half-deleted must not look done.
pub async fn delete_keys(
    s3: &S3,
    keys: &[String],
    doing: &str,
) -> Result<Vec<String>, ActionError> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let mut deleted = Vec::new();
    for batch in keys.chunks(1000) {
        let ids = batch
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ActionError::permanent(e.to_string()))?;
        let del = Delete::builder()
            .set_objects(Some(ids))
            .build()
            .map_err(|e| ActionError::permanent(e.to_string()))?;
        let out = s3
            .client
            .delete_objects()
            .bucket(&s3.bucket)
            .delete(del)
            .send()
            .await
            .map_err(|e| classify(&e, doing))?;
        if let Some(err) = out.errors().first() {
            return Err(ActionError::permanent(format!(
                "deleting {}: {}",
                err.key().unwrap_or("?"),
                err.message().unwrap_or(err.code().unwrap_or("refused"))
            )));
        }
        deleted.extend(
            out.deleted()
                .iter()
                .filter_map(|d| d.key().map(String::from)),
        );
    }
    Ok(deleted)
}

/// A small object (a manifest, a `.sha256`), whole; `None` when there is no such key.
pub async fn get_optional(s3: &S3, key: &str) -> Result<Option<bytes::Bytes>, ActionError> {
    let what = format!("reading s3://{}/{key}", s3.bucket);
    match s3
        .client
        .get_object()
        .bucket(&s3.bucket)
        .key(key)
        .send()
        .await
    {
        Ok(out) => {
            let body = out
                .body
                .collect()
                .await
                .map_err(|e| ActionError::transient(format!("{what}: {e}")))?;
            Ok(Some(body.into_bytes()))
        }
        Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_key()) => Ok(None),
        Err(e) => Err(classify(&e, &what)),
    }
}

/// The largest object CopyObject copies in one request; above it, UploadPartCopy.
const COPY_ONE: u64 = 5 * 1024 * 1024 * 1024;
/// The range each UploadPartCopy request copies.
const COPY_PART: u64 = 1024 * 1024 * 1024;

/// Copies an object inside one S3 service, server-side (no byte passes through this machine):
/// CopyObject up to 5 GiB, a multipart upload of UploadPartCopy ranges above.
pub async fn server_copy(
    from: &S3,
    from_key: &str,
    size: u64,
    to: &S3,
    to_key: &str,
    storage_class: Option<&str>,
) -> Result<(), ActionError> {
    use aws_sdk_s3::types::StorageClass;
    let what = format!(
        "copying s3://{}/{from_key} to s3://{}/{to_key}",
        from.bucket, to.bucket
    );
    let source = format!("{}/{}", from.bucket, copy_source_key(from_key));
    let class = storage_class.map(StorageClass::from);
    if size <= COPY_ONE {
        return to
            .client
            .copy_object()
            .copy_source(&source)
            .bucket(&to.bucket)
            .key(to_key)
            .set_storage_class(class)
            .send()
            .await
            .map(drop)
            .map_err(|e| classify(&e, &what));
    }
    let up = to
        .client
        .create_multipart_upload()
        .bucket(&to.bucket)
        .key(to_key)
        .set_storage_class(class)
        .send()
        .await
        .map_err(|e| classify(&e, &what))?;
    let id = up.upload_id().unwrap_or_default().to_string();
    let mut parts = Vec::new();
    let mut start = 0;
    let mut n = 0;
    let copied: Result<(), ActionError> = async {
        while start < size {
            n += 1;
            let end = (start + COPY_PART).min(size) - 1;
            let r = to
                .client
                .upload_part_copy()
                .copy_source(&source)
                .copy_source_range(format!("bytes={start}-{end}"))
                .bucket(&to.bucket)
                .key(to_key)
                .upload_id(&id)
                .part_number(n)
                .send()
                .await
                .map_err(|e| classify(&e, &what))?;
            parts.push(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(
                        r.copy_part_result()
                            .and_then(|c| c.e_tag())
                            .map(String::from),
                    )
                    .build(),
            );
            start = end + 1;
        }
        to.client
            .complete_multipart_upload()
            .bucket(&to.bucket)
            .key(to_key)
            .upload_id(&id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(drop)
            .map_err(|e| classify(&e, &what))
    }
    .await;
    if copied.is_err() {
        let _ = to
            .client
            .abort_multipart_upload()
            .bucket(&to.bucket)
            .key(to_key)
            .upload_id(&id)
            .send()
            .await;
    }
    copied
}

/// A key in `x-amz-copy-source`: percent-encoded, `/` kept.
fn copy_source_key(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An object's size and SHA-256, read back whole from the store: what a copy is verified by.
pub async fn stored_sha256(s3: &S3, key: &str) -> Result<(u64, String), ActionError> {
    use sha2::Digest;
    let what = format!("reading s3://{}/{key} back", s3.bucket);
    let out = s3
        .client
        .get_object()
        .bucket(&s3.bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| classify(&e, &what))?;
    let mut body = out.body;
    let mut hash = sha2::Sha256::new();
    let mut size = 0u64;
    while let Some(b) = body
        .try_next()
        .await
        .map_err(|e| ActionError::transient(format!("{what}: {e}")))?
    {
        size += b.len() as u64;
        hash.update(&b);
    }
    Ok((size, crate::runlog::hex(&hash.finalize())))
}

/// An object's size, `None` when there is no such key.
pub async fn get_optional_head(s3: &S3, key: &str) -> Result<Option<u64>, ActionError> {
    match s3
        .client
        .head_object()
        .bucket(&s3.bucket)
        .key(key)
        .send()
        .await
    {
        Ok(h) => Ok(Some(h.content_length().unwrap_or(0).max(0) as u64)),
        Err(e) if e.as_service_error().is_some_and(|se| se.is_not_found()) => Ok(None),
        Err(e) => Err(classify(&e, &format!("reading s3://{}/{key}", s3.bucket))),
    }
}

/// Writes a JSON document (a manifest) as an object.
pub async fn put_json(s3: &S3, key: &str, value: &Value) -> Result<(), ActionError> {
    s3.client
        .put_object()
        .bucket(&s3.bucket)
        .key(key)
        .content_type("application/json")
        .body(aws_sdk_s3::primitives::ByteStream::from(
            serde_json::to_vec_pretty(value).expect("JSON values serialize"),
        ))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| classify(&e, &format!("writing s3://{}/{key}", s3.bucket)))
}

/// An object key (or a prefix of keys) as lifeboat writes and reads them: no `.` or `..` path
/// segment (a key built from a param must not climb out of where it belongs, in S3 or in a
/// local copy), no leading `/`, no control character, at most S3's 1,024 bytes. A templated one
/// is checked once rendered, before the attempt touches anything.
pub fn key_problem(field: &str, key: &str, prefix: bool) -> Option<crate::actions::WithProblem> {
    if crate::actions::unknown_yet(key) {
        return None;
    }
    let why = if key.is_empty() && !prefix {
        "an object key cannot be empty"
    } else if key.starts_with('/') {
        "a key does not start with `/`"
    } else if key.split('/').any(|seg| seg == ".." || seg == ".") {
        "a key has no `.` or `..` segment"
    } else if key.chars().any(char::is_control) {
        "a key holds no control character"
    } else if key.len() > 1024 {
        "a key is at most 1,024 bytes"
    } else {
        return None;
    };
    Some(crate::actions::WithProblem::new(
        field,
        format!("`{}`: {why}", crate::text::printable(key, false)),
    ))
}
