//! `wait`: sleep for a while.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ActionSpec, DescribeContext, Effect, Output, WithProblem, out};
use crate::runbook::DurationText;

/// Pause the run for `for`. (To wait for a condition, give any read-only step an `assert` and a
/// `retry` policy: it is polled until the assertion holds.)
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// How long to wait.
    #[serde(rename = "for")]
    pub duration: DurationText,
}

impl ActionSpec for Wait {
    const NAME: &'static str = "wait";
    const SUMMARY: &'static str = "Pause the run for a fixed time";
    const OUTPUTS: &'static [Output] = &[out("waited_ms", "milliseconds actually waited")];

    fn effect(&self) -> Effect {
        Effect::ReadOnly
    }
    fn destructive(&self) -> bool {
        false
    }
    fn check(&self) -> Vec<WithProblem> {
        WithProblem::duration("/for", Some(&self.duration)).into_iter().collect()
    }
    fn describe(&self, _: &dyn DescribeContext) -> String {
        format!("wait {}", self.duration.0.as_str().unwrap_or("?"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn checks_the_duration() {
        assert_eq!(describe::<Wait>(json!({"for": "30s"})), "wait 30s");
        let bad = parse::<Wait>(json!({"for": "30 seconds"})).check();
        assert_eq!(bad[0].field, "/for");
    }
}
