//! The plan as Graphviz DOT.

use std::fmt::Write;

use super::{Plan, StepStatus};

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn render(plan: &Plan) -> String {
    let mut out = format!(
        "digraph {} {{\n  rankdir=TB;\n  node [shape=box, style=rounded];\n",
        quote(&plan.runbook.name)
    );
    let critical: std::collections::HashSet<&str> = plan
        .critical_path
        .steps
        .iter()
        .map(String::as_str)
        .collect();
    for s in &plan.steps {
        let mut attrs = vec![format!(
            "label={}",
            quote(&format!("{}\\n{}{}", s.id, s.action, s.phase.suffix()))
        )];
        if s.destructive {
            attrs.push("color=red, penwidth=2".into());
        }
        match s.status {
            StepStatus::Skipped => attrs.push("style=\"rounded,dashed\", fontcolor=gray".into()),
            StepStatus::Conditional => attrs.push("style=\"rounded,dotted\"".into()),
            StepStatus::Runs => {}
        }
        let _ = writeln!(out, "  {} [{}];", quote(&s.id), attrs.join(", "));
    }
    for s in &plan.steps {
        for n in &s.needs {
            let bold = if critical.contains(n.as_str()) && critical.contains(s.id.as_str()) {
                " [penwidth=2]"
            } else {
                ""
            };
            let _ = writeln!(out, "  {} -> {}{bold};", quote(n), quote(&s.id));
        }
    }
    out.push_str("}\n");
    out
}
