//! What actions of several families share: field helpers (connections, durations, `Tpl`), error
//! chains, the AWS SDK's configuration, child processes, the streamed backup format, backups in
//! parts, and PostgreSQL's restore-beside-and-swap. Also code of one family that is not an
//! action but too big for its `mod.rs`: Neo4j's values as JSON (`neo4j_values`) and Kubernetes objects as exported
//! (`kube_objects`), since a family
//! folder holds only its verbs.

pub mod aws;
pub mod backup_parts;
pub mod kube_objects;
mod legacy;
pub mod neo4j_values;
pub mod pg_local;
pub mod pg_swap;
pub mod pipeline;
pub mod process;
pub mod progress;
mod templated;

pub use templated::{Tpl, is_template};

use crate::actions::{ActionError, ConnectionUse};
use crate::runbook::{ConnectionKind, DurationText};

/// What an action whose `with` names one connection in its `connection` field declares.
pub fn the_connection<'a>(
    name: &'a str,
    kinds: &'static [ConnectionKind],
) -> Vec<ConnectionUse<'a>> {
    vec![ConnectionUse {
        field: "/connection",
        name,
        kinds,
    }]
}

/// Parses a duration field (validation already checked its text).
pub fn duration(d: &DurationText) -> Result<std::time::Duration, ActionError> {
    let text =
        d.0.as_str()
            .ok_or_else(|| ActionError::permanent("a duration must be a string"))?;
    crate::runbook::duration::parse(text).map_err(ActionError::permanent)
}

/// Parses a duration field, or the default.
pub fn duration_or(
    d: Option<&DurationText>,
    default: std::time::Duration,
) -> Result<std::time::Duration, ActionError> {
    d.map_or(Ok(default), duration)
}

/// An error and its sources, joined with `: `: the outermost message of a client library
/// ("error sending request") alone rarely says what went wrong.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    s
}
