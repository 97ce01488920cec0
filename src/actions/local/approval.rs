//! `approval`: a gate a person must pass.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::actions::{ActionSpec, DescribeContext, Output, When, out};

/// Stop until an operator approves: prompted on a terminal, else recorded with `lifeboat approve`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The question put to the operator.
    pub message: String,
    /// Who may approve; anyone when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
}

impl ActionSpec for Approval {
    const NAME: &'static str = "approval";
    const SUMMARY: &'static str = "Wait for an operator to approve before going on";
    const OUTPUTS: &'static [Output] = &[
        out("approved_by", "the operator who approved"),
        out("approved_at", "when, RFC 3339"),
        out(
            "via",
            "prompt, command, or yes_flag (`--yes`: nobody was asked)",
        ),
    ];
    const READ_ONLY: When<Self> = When::Always;
    const DESTRUCTIVE: When<Self> = When::Never;
    // The engine runs approval gates itself: they need the run's log and its operator.
    const RUNNABLE: bool = true;

    fn describe(&self, _: &dyn DescribeContext) -> String {
        let who = if self.approvers.is_empty() {
            String::new()
        } else {
            format!(" (by {})", self.approvers.join(" or "))
        };
        format!("ask for approval{who}: {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn describes_the_question() {
        let d = describe::<Approval>(json!({"message": "Restart?", "approvers": ["ana", "bo"]}));
        assert_eq!(d, "ask for approval (by ana or bo): Restart?");
        assert!(reject::<Approval>(json!({})).contains("missing field `message`"));
    }
}
