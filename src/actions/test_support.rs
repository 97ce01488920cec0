//! Helpers for the actions' unit tests.

use super::{ActionSpec, DescribeContext, parse_with};

pub struct Cx;

impl DescribeContext for Cx {
    fn connection(&self, name: &str) -> String {
        format!("<{name}>")
    }
}

pub fn parse<A: ActionSpec>(with: serde_json::Value) -> A {
    parse_with::<A>(&with).unwrap_or_else(|e| panic!("{}: {} at {}", A::NAME, e.message, e.field))
}

pub fn describe<A: ActionSpec>(with: serde_json::Value) -> String {
    parse::<A>(with).describe(&Cx)
}

/// The message serde gives for `with`, which must fail.
pub fn reject<A: ActionSpec + std::fmt::Debug>(with: serde_json::Value) -> String {
    match parse_with::<A>(&with) {
        Ok(a) => panic!("{} accepted {a:?}", A::NAME),
        Err(e) => format!("{}: {}", e.field, e.message),
    }
}
