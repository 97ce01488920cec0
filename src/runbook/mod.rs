//! Runbooks: loading, the JSON Schema, and validation into a [`ValidRunbook`].
//!
//! Invariant: nothing in this module touches the network or reads secrets. Validation is a pure
//! function of the file's text (and the params given), so `validate` and `plan` are safe in CI.

pub mod duration;
mod load;
mod model;
pub mod params;
pub mod schema;
mod source;
mod spans;
pub mod templates;
mod validate;
mod validated;

pub use load::{Loaded, load_file, load_str};
pub use model::*;
pub use source::{MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, Source};
pub use spans::{NodeSpan, Range, SpanMap};
pub use validated::*;

/// The kinds of connection a runbook can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    Postgres,
    S3,
    Kubernetes,
    Rfc2136,
    Route53,
    Neo4j,
}

impl ConnectionKind {
    pub const ALL: &'static [ConnectionKind] = &[
        ConnectionKind::Postgres,
        ConnectionKind::S3,
        ConnectionKind::Kubernetes,
        ConnectionKind::Rfc2136,
        ConnectionKind::Route53,
        ConnectionKind::Neo4j,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Postgres => "postgres",
            ConnectionKind::S3 => "s3",
            ConnectionKind::Kubernetes => "kubernetes",
            ConnectionKind::Rfc2136 => "rfc2136",
            ConnectionKind::Route53 => "route53",
            ConnectionKind::Neo4j => "neo4j",
        }
    }
}

impl std::fmt::Display for ConnectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
