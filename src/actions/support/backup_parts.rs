//! What a backup in parts is made of: the schema before the data (a pg_dump custom archive, at
//! the backup's own key), the data in streams (one per big table and one for everything else,
//! each a psql script of COPY blocks) and the schema after the data (indexes, constraints,
//! triggers: a pg_dump custom archive). Each part is its own object, compressed, sealed and
//! checksummed on its own and listed in the manifest, so that a restore loads several streams at
//! once while they download; each still opens with the stock `age`, `zstd`, `pg_restore` and
//! `psql` (docs/backups.md has the commands).

use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The manifest's `format` of a backup in parts.
pub const FORMAT: &str = "pg_dump parts";

/// What a part holds, in the order a restore loads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    PreData,
    Data,
    PostData,
}

/// One part, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub key: String,
    pub role: Role,
    /// The table whose rows it holds; absent for the schema parts and the stream of everything
    /// else (small tables, sequences' values, large objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// For a chunk of a big table, the pages it holds: `ctid` from `(first,0)` up to, not
    /// including, `(end,0)` (to the table's end when there is no `end`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<Pages>,
    /// Bytes stored (compressed and sealed).
    pub size: u64,
    /// Bytes before compression.
    pub plain_size: u64,
    pub sha256: String,
}

/// A range of a table's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pages {
    pub first: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<i64>,
}

/// Splits `pages` pages into `n` ranges of about equal size, the last one open (a table may have
/// grown since its size was read; its rows in the snapshot are all in some range).
pub fn split(pages: i64, n: i64) -> Vec<Pages> {
    let n = n.max(1);
    let per = (pages + n - 1) / n;
    (0..n)
        .map(|i| Pages {
            first: i * per,
            end: (i + 1 < n).then_some((i + 1) * per),
        })
        .collect()
}

/// The key of the `n`th part after the first (the first is the backup's own key).
pub fn part_key(key: &str, n: usize) -> String {
    format!("{key}.part{n:04}")
}

/// The key of the `i`th object of a backup at `key`: the key itself first, then its parts.
pub fn object_key(key: &str, i: usize) -> String {
    if i == 0 {
        key.to_string()
    } else {
        part_key(key, i)
    }
}

/// Whether a key is a part of another backup (`<key>.partNNNN`), not a backup of its own.
pub fn is_part_key(key: &str) -> bool {
    key.rsplit_once(".part")
        .is_some_and(|(_, n)| n.len() >= 4 && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The suffix of an object `backup.rekey` writes before it replaces the original.
pub const REKEYING: &str = ".rekeying";

/// Whether a key is a backup rather than something kept beside one: a manifest, the legacy
/// scripts' `.sha256` file, a part, or a re-encrypted object not yet in its place.
pub fn is_backup_key(key: &str) -> bool {
    !key.ends_with(".manifest.json")
        && !key.ends_with(".sha256")
        && !key.ends_with(REKEYING)
        && !is_part_key(key)
}

/// The backup's one SHA-256 (its `sha256` output): over each part's key and SHA-256, in order,
/// so that it changes when any part does.
pub fn digest(parts: &[Part]) -> String {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(format!("{} {}\n", p.key, p.sha256).as_bytes());
    }
    crate::runlog::hex(&h.finalize())
}

/// The parts a manifest lists, checked to be whole: one schema part first, one last, data
/// between, every key this backup's own. `Ok(None)`: the manifest is not of a backup in parts.
pub fn from_manifest(key: &str, manifest: &serde_json::Value) -> Result<Option<Vec<Part>>, String> {
    if manifest.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Ok(None);
    }
    let parts: Vec<Part> = serde_json::from_value(
        manifest
            .get("parts")
            .cloned()
            .ok_or("the manifest lists no parts")?,
    )
    .map_err(|e| format!("the manifest's parts do not read: {e}"))?;
    let n = parts.len();
    let shape_ok = n >= 2
        && parts[0].role == Role::PreData
        && parts[n - 1].role == Role::PostData
        && parts[1..n - 1].iter().all(|p| p.role == Role::Data)
        && parts
            .iter()
            .enumerate()
            .all(|(i, p)| p.key == object_key(key, i));
    if !shape_ok {
        return Err("the manifest's parts are not a whole backup (schema, data, schema, each under this backup's key)".into());
    }
    if let Some(d) = manifest.get("sha256").and_then(|s| s.as_str())
        && d != digest(&parts)
    {
        return Err("the manifest's sha256 does not match its parts: it was changed".into());
    }
    Ok(Some(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(key: &str, role: Role) -> Part {
        Part {
            key: key.into(),
            role,
            table: None,
            pages: None,
            size: 1,
            plain_size: 1,
            sha256: "ab".into(),
        }
    }

    #[test]
    fn a_table_splits_into_ranges_that_cover_it() {
        let r = split(10, 3);
        assert_eq!(
            r,
            vec![
                Pages {
                    first: 0,
                    end: Some(4)
                },
                Pages {
                    first: 4,
                    end: Some(8)
                },
                Pages {
                    first: 8,
                    end: None
                },
            ]
        );
        assert_eq!(split(0, 2).len(), 2);
        assert_eq!(
            split(5, 1),
            vec![Pages {
                first: 0,
                end: None
            }]
        );
    }

    #[test]
    fn keys_tell_backups_from_what_is_kept_beside_them() {
        assert!(is_backup_key("pg/orders/r1.dump.zst.age"));
        assert!(!is_backup_key("pg/orders/r1.dump.zst.age.part0001"));
        assert!(!is_backup_key("pg/orders/r1.dump.zst.age.part12345"));
        assert!(!is_backup_key("pg/orders/r1.dump.zst.age.manifest.json"));
        assert!(!is_backup_key("legacy/orders-2026.sql.gz.enc.sha256"));
        assert!(is_backup_key("pg/orders/r1.part1"));
        assert!(is_backup_key("pg/orders/r1.partial"));
        assert!(!is_backup_key("pg/orders/r1.part0002.rekeying"));
    }

    #[test]
    fn a_manifest_must_list_a_whole_backup() {
        let k = "b/k";
        let whole = vec![
            part(k, Role::PreData),
            part(&part_key(k, 1), Role::Data),
            part(&part_key(k, 2), Role::PostData),
        ];
        let m = |parts: &[Part]| serde_json::json!({"format": FORMAT, "parts": parts, "sha256": digest(parts)});
        assert_eq!(from_manifest(k, &m(&whole)).unwrap(), Some(whole.clone()));
        assert_eq!(
            from_manifest(k, &serde_json::json!({"format": "pg_dump custom"})).unwrap(),
            None
        );
        let mut swapped = whole.clone();
        swapped.swap(1, 2);
        assert!(from_manifest(k, &m(&swapped)).is_err());
        assert!(from_manifest(k, &m(&whole[..2])).is_err());
        let mut foreign = whole.clone();
        foreign[1].key = "elsewhere".into();
        assert!(from_manifest(k, &m(&foreign)).is_err());
        let mut changed = m(&whole);
        changed["parts"][1]["sha256"] = "cd".into();
        assert!(from_manifest(k, &changed).is_err());
    }
}
