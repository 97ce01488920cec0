//! `approval`: a gate a person must pass.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::actions::{ActionSpec, DescribeContext, Output, When, WithProblem, out};

/// Stop until an operator approves: prompted on a terminal, else recorded with `lifeboat approve`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The question put to the operator.
    pub message: String,
    /// Who may approve, as the state store identifies them: OS accounts for a folder store,
    /// database roles for a PostgreSQL one. `--yes` never passes a gate that names approvers.
    /// Anyone when empty.
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

    fn check(&self) -> Vec<WithProblem> {
        self.approvers
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_empty() || crate::text::bad_name(a))
            .map(|(i, a)| {
                WithProblem::new(
                    format!("/approvers/{i}"),
                    format!(
                        "`{}` is not a name an identity can have (empty, or a control character or line break)",
                        crate::text::printable(a, false)
                    ),
                )
            })
            .collect()
    }

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

    #[test]
    fn approvers_are_names_an_identity_can_have() {
        for bad in ["", "ana\nbo", "ev\u{202e}il", "x\u{7}"] {
            let a = parse::<Approval>(json!({"message": "m", "approvers": ["ok", bad]}));
            let p = a.check();
            assert_eq!(p.len(), 1, "{bad:?}");
            assert_eq!(p[0].field, "/approvers/1");
        }
        assert!(
            parse::<Approval>(json!({"message": "m", "approvers": ["José", "lb_ann"]}))
                .check()
                .is_empty()
        );
    }
}
