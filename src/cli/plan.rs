//! `lifeboat plan FILE`

use std::path::Path;

use super::{PlanFormat, parse_params};
use crate::engine::preview::{self, Look, LookResult};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::plan;
use crate::runbook::{load_file, params};

pub(super) fn run(
    file: &Path,
    given: &[String],
    format: PlanFormat,
    live: bool,
    scenario: Option<&str>,
) -> Result<Exit> {
    if live && matches!(format, PlanFormat::Mermaid | PlanFormat::Dot) {
        return Err(Error::invalid("--live works with --format text or json"));
    }
    let given = parse_params(given)?;
    let loaded = load_file(file);
    let rb = match loaded.result {
        Ok(rb) => rb,
        Err(diags) => return Err(Error::runbook(loaded.source, diags)),
    };
    super::validate::warn(&loaded.source, &rb);
    let values = match params::resolve(&rb, &given, true) {
        Ok(v) => v,
        Err(diags) => return Err(Error::runbook(loaded.source, diags)),
    };
    // The steps `for_each` makes with these params: what `--live` looks at and a drill runs.
    let rb = match crate::runbook::expand(&rb, &values) {
        Ok(rb) => rb,
        Err(diags) => return Err(Error::runbook(loaded.source, diags)),
    };
    let rb = match scenario {
        Some(name) => {
            crate::drill::compose(&rb, name)
                .map_err(Error::Invalid)?
                .runbook
        }
        None => rb,
    };
    let mut plan = match plan::build(&rb, &values) {
        Ok(p) => p,
        Err(diags) => return Err(Error::runbook(loaded.source, diags)),
    };
    plan.scenario = scenario.map(String::from);
    let looks = if live {
        Some(look(&rb, &values, &plan)?)
    } else {
        None
    };
    let failed = looks
        .iter()
        .flatten()
        .any(|l| matches!(l.result, LookResult::Error(_)));
    let children = children(file, &plan, 1);
    let out = match format {
        PlanFormat::Text => {
            let mut out = plan::render_text(&plan);
            out.push_str(&render_children(&children));
            if let Some(looks) = &looks {
                out.push_str(&render_looks(looks));
            }
            out
        }
        PlanFormat::Json => {
            let mut v: serde_json::Value =
                serde_json::from_str(&plan::render_json(&plan)).expect("the plan is JSON");
            if let Some(looks) = &looks {
                v["live"] = serde_json::json!(looks);
            }
            if !children.is_empty() {
                v["children"] = children_json(&children);
            }
            format!(
                "{}\n",
                serde_json::to_string_pretty(&v).expect("JSON prints")
            )
        }
        PlanFormat::Mermaid => plan::render_mermaid(&plan),
        PlanFormat::Dot => plan::render_dot(&plan),
    };
    match format {
        // Data for tools, exact (JSON escapes control characters itself).
        PlanFormat::Json => out!("{out}"),
        // Read by people, on a terminal or in a review.
        PlanFormat::Text | PlanFormat::Mermaid | PlanFormat::Dot => say!("{out}"),
    }
    Ok(if failed { Exit::Failed } else { Exit::Success })
}

/// The plan of a runbook a step runs (`action: runbook`), with the params the step gives it.
struct Child {
    step: String,
    file: String,
    plan: std::result::Result<plan::Plan, String>,
    children: Vec<Child>,
}

/// The plans of the runbooks `plan`'s steps run, and of those they run in turn. A param whose
/// value is known only during the run (a step's output) is left to the child's default, and
/// said so; loading already refused cycles and missing files.
fn children(file: &Path, plan: &plan::Plan, depth: usize) -> Vec<Child> {
    if depth > crate::runbook::MAX_CALL_DEPTH {
        return Vec::new();
    }
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for s in plan.steps.iter().filter(|s| s.action == "runbook") {
        let Some(name) = s.inputs.get("file").and_then(|f| f.as_str()) else {
            continue;
        };
        let path = dir.join(name);
        let mut given = Vec::new();
        let mut later = Vec::new();
        if let Some(params) = s.inputs.get("params").and_then(|p| p.as_object()) {
            for (k, v) in params {
                let text = match v {
                    serde_json::Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                if text.contains('⟨') || text.contains("***") {
                    later.push(k.clone());
                } else {
                    given.push((k.clone(), text));
                }
            }
        }
        let loaded = load_file(&path);
        let built = match loaded.result {
            Err(d) => Err(format!(
                "{} problem(s); `lifeboat validate {}`",
                d.len(),
                path.display()
            )),
            Ok(rb) => match params::resolve(&rb, &given, true) {
                Err(d) => Err(d.first().map(|d| d.message.clone()).unwrap_or_default()
                    + if later.is_empty() {
                        String::new()
                    } else {
                        format!(" ({} known only during the run)", later.join(", "))
                    }
                    .as_str()),
                Ok(values) => plan::build(&rb, &values)
                    .map_err(|d| d.first().map(|d| d.message.clone()).unwrap_or_default()),
            },
        };
        let grandchildren = match &built {
            Ok(p) => children(&path, p, depth + 1),
            Err(_) => Vec::new(),
        };
        out.push(Child {
            step: s.id.clone(),
            file: name.to_string(),
            plan: built,
            children: grandchildren,
        });
    }
    out
}

/// Each child's plan under a heading naming the step that runs it, indented by its depth.
fn render_children(children: &[Child]) -> String {
    let mut out = String::new();
    for c in children {
        out.push_str(&format!("\nStep `{}` runs {}:\n", c.step, c.file));
        let body = match &c.plan {
            Ok(p) => {
                let mut t = plan::render_text(p);
                t.push_str(&render_children(&c.children));
                t
            }
            Err(why) => format!("its plan cannot be made yet: {why}\n"),
        };
        for line in body.lines() {
            if line.is_empty() {
                out.push_str("  │\n");
            } else {
                out.push_str(&format!("  │ {line}\n"));
            }
        }
    }
    out
}

fn children_json(children: &[Child]) -> serde_json::Value {
    serde_json::Value::Object(
        children
            .iter()
            .map(|c| {
                let mut v = match &c.plan {
                    Ok(p) => serde_json::from_str(&plan::render_json(p)).expect("the plan is JSON"),
                    Err(why) => serde_json::json!({ "error": why }),
                };
                v["file"] = serde_json::json!(c.file);
                if !c.children.is_empty() {
                    v["children"] = children_json(&c.children);
                }
                (c.step.clone(), v)
            })
            .collect(),
    )
}

/// Reads the live state of the steps that would run (not those `when` skips).
fn look(
    rb: &crate::runbook::ValidRunbook,
    values: &indexmap::IndexMap<String, serde_json::Value>,
    plan: &plan::Plan,
) -> Result<Vec<Look>> {
    let steps: Vec<usize> = plan
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.status != plan::StepStatus::Skipped)
        .map(|(i, _)| i)
        .collect();
    let http = super::run::http_client()?;
    super::run::runtime()
        .block_on(preview::look(rb, values, &steps, &http))
        .map_err(|e| Error::Failed(format!("--live cannot read the secrets: {e}")))
}

fn render_looks(looks: &[Look]) -> String {
    let mut out = String::from("\nLive (read just now):\n");
    if looks.is_empty() {
        out.push_str("  no step has anything to read ahead\n");
    }
    for l in looks {
        match &l.result {
            LookResult::Now(t) => out.push_str(&format!("  {}: {t}\n", l.step)),
            LookResult::Error(e) => out.push_str(&format!("  {}: cannot read: {e}\n", l.step)),
        }
    }
    out
}
