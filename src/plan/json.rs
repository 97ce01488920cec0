//! The plan as JSON: stable, documented in docs/plan-json.md.

use super::Plan;

pub fn render(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan).expect("plans serialize");
    s.push('\n');
    s
}
