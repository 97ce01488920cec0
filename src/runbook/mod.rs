//! Runbooks: loading, the JSON Schema, and validation into a [`ValidRunbook`].
//!
//! Invariant: nothing in this module touches the network or reads secrets. Validation is a pure
//! function of the file's text (and the params given), so `validate` and `plan` are safe in CI.

mod connections;
pub mod duration;
mod expand;
mod injection;
mod load;
mod model;
pub mod params;
mod quoting;
pub mod schema;
mod source;
mod spans;
pub mod templates;
mod validate;
mod validated;

pub use connections::*;
pub use expand::{MAX_ITEMS, expand};
pub use load::{Loaded, MAX_CALL_DEPTH, load_file, load_str};
pub use model::*;
pub use source::{MAX_DEPTH, MAX_FILE_BYTES, MAX_NODES, Source};
pub use spans::{NodeSpan, Range, SpanMap};
pub use validated::*;
