//! lifeboat: versioned YAML runbooks for backup, restore and disaster recovery.
//!
//! See ARCHITECTURE.md for the map. In short: `runbook` loads and validates a file into a
//! `ValidRunbook`; `plan` turns that into the dry run; `actions` holds one file per step type;
//! `diagnostics` renders problems; `cli` is the only place that prints.

// Errors here are diagnostics for a person, built once per problem on a path that ends the command:
// their size does not matter, and boxing them would only add noise.
#![allow(clippy::result_large_err)]

pub mod actions;
pub mod budget;
pub mod cli;
pub mod diagnostics;
pub mod drill;
pub mod engine;
pub mod error;
pub mod exit;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod plan;
pub mod runbook;
pub mod runlog;
pub mod store;
pub mod text;
