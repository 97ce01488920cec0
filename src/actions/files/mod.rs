//! The `files.*` actions: a directory (a vector index on disk, a search engine's dump folder, a
//! tool registry) backed up as one tar stream through the backup pipeline, and restored beside
//! the live one, then swapped in by a rename once every byte is verified.
//!
//! tar because the format is the one every operator can open by hand in a disaster
//! (`age -d | zstd -d | tar x`), and the `tar` crate writes and reads it as a stream.

pub mod backup;
pub mod restore;

use serde::{Deserialize, Serialize};

/// The `format` in a files backup's manifest.
pub const FORMAT: &str = "lifeboat files tar 1";

/// What a directory holds, as a backup counted it and a restore checks it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Regular files.
    pub files: u64,
    /// Directories under the root (the root itself not counted).
    pub directories: u64,
    pub symlinks: u64,
    /// The regular files' bytes.
    pub bytes: u64,
}

impl Tally {
    /// What differs between what was restored (`self`) and what the manifest says, in words.
    pub fn differences(&self, want: &Tally) -> Vec<String> {
        [
            ("files", self.files, want.files),
            ("directories", self.directories, want.directories),
            ("symlinks", self.symlinks, want.symlinks),
            ("bytes", self.bytes, want.bytes),
        ]
        .into_iter()
        .filter(|(_, got, want)| got != want)
        .map(|(what, got, want)| format!("{what}: {got}, the manifest says {want}"))
        .collect()
    }
}

/// A path inside the directory, as written (`metadata`): relative and not leaving it.
pub fn inner_path_problem(p: &str) -> Option<&'static str> {
    let path = std::path::Path::new(p);
    if p.is_empty() || path.is_absolute() {
        return Some("a path inside the directory, relative to it");
    }
    if path.components().any(|c| {
        !matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::CurDir
        )
    }) {
        return Some("a path inside the directory: `..` would leave it");
    }
    None
}

/// The JSON file `rel` inside `dir`, for `outputs.metadata`: what the directory says about
/// itself (a vector index's document count), read so a runbook can check it against the graph.
pub fn read_metadata(dir: &std::path::Path, rel: &str) -> Result<serde_json::Value, String> {
    let path = dir.join(rel);
    let text = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metadata_path_stays_inside() {
        assert!(inner_path_problem("index/meta.json").is_none());
        assert!(inner_path_problem("./meta.json").is_none());
        assert!(inner_path_problem("../meta.json").is_some());
        assert!(inner_path_problem("/etc/passwd").is_some());
        assert!(inner_path_problem("").is_some());
    }

    #[test]
    fn differences_name_each_count() {
        let got = Tally {
            files: 2,
            directories: 1,
            symlinks: 0,
            bytes: 10,
        };
        let want = Tally { files: 3, ..got };
        assert_eq!(got.differences(&want), ["files: 2, the manifest says 3"]);
        assert!(got.differences(&got).is_empty());
    }
}
