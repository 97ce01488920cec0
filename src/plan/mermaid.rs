//! The plan as a Mermaid flowchart, which GitHub renders in pull requests and Markdown files.

use std::fmt::Write;

use super::{Plan, StepStatus};

/// Node ids are prefixed: a step called `end` or `graph` would otherwise break the chart.
fn node(id: &str) -> String {
    format!("s_{id}")
}

/// Mermaid labels are quoted; quotes and angle brackets become entities.
fn label(s: &str) -> String {
    s.replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

pub fn render(plan: &Plan) -> String {
    let mut out = String::from("flowchart TD\n");
    for s in &plan.steps {
        let mut text = format!(
            "{}<br/><small>{}{}</small>",
            label(&s.id),
            label(&s.action),
            s.phase.suffix()
        );
        if s.destructive {
            text.push_str("<br/>⚠ destructive");
        }
        match s.status {
            StepStatus::Skipped => text.push_str("<br/>skipped"),
            StepStatus::Conditional => text.push_str("<br/>conditional"),
            StepStatus::Runs => {}
        }
        let class = match (s.status, s.destructive) {
            (StepStatus::Skipped, _) => ":::skipped",
            (_, true) => ":::destructive",
            (StepStatus::Conditional, false) => ":::conditional",
            _ => "",
        };
        let _ = writeln!(out, "  {}[\"{text}\"]{class}", node(&s.id));
    }
    for s in &plan.steps {
        for n in &s.needs {
            let _ = writeln!(out, "  {} --> {}", node(n), node(&s.id));
        }
    }
    let critical: Vec<&String> = plan.critical_path.steps.iter().collect();
    if critical.len() > 1 {
        let _ = writeln!(
            out,
            "  %% critical path: {}",
            plan.critical_path.steps.join(" -> ")
        );
    }
    out.push_str("  classDef destructive fill:#fde2e1,stroke:#c0392b,stroke-width:2px\n");
    out.push_str("  classDef skipped fill:#f4f4f4,stroke:#999,stroke-dasharray:5 5,color:#777\n");
    out.push_str("  classDef conditional stroke-dasharray:3 3\n");
    out
}
