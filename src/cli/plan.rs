//! `lifeboat plan FILE`

use std::path::Path;

use super::{DiagnosticFormat, PlanFormat, parse_params, validate::print};
use crate::engine::preview::{self, Look, LookResult};
use crate::exit::Exit;
use crate::plan;
use crate::runbook::{load_file, params};

pub(super) fn run(
    file: &Path,
    given: &[String],
    format: PlanFormat,
    live: bool,
    scenario: Option<&str>,
) -> Exit {
    if live && matches!(format, PlanFormat::Mermaid | PlanFormat::Dot) {
        eprintln!("error: --live works with --format text or json");
        return Exit::Invalid;
    }
    let given = match parse_params(given) {
        Ok(g) => g,
        Err(e) => return e,
    };
    let loaded = load_file(file);
    let rb = match loaded.result {
        Ok(rb) => rb,
        Err(diags) => {
            print(&loaded.source, diags, DiagnosticFormat::Human);
            return Exit::Invalid;
        }
    };
    let values = match params::resolve(&rb, &given, true) {
        Ok(v) => v,
        Err(diags) => {
            print(&loaded.source, diags, DiagnosticFormat::Human);
            return Exit::Invalid;
        }
    };
    let rb = match scenario {
        Some(name) => match crate::drill::compose(&rb, name) {
            Ok(c) => c.runbook,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Invalid;
            }
        },
        None => rb,
    };
    let plan = match plan::build(&rb, &values) {
        Ok(mut p) => {
            p.scenario = scenario.map(String::from);
            p
        }
        Err(diags) => {
            print(&loaded.source, diags, DiagnosticFormat::Human);
            return Exit::Invalid;
        }
    };
    let looks = if live {
        match look(&rb, &values, &plan) {
            Ok(l) => Some(l),
            Err(e) => return e,
        }
    } else {
        None
    };
    let failed = looks
        .iter()
        .flatten()
        .any(|l| matches!(l.result, LookResult::Error(_)));
    let out = match format {
        PlanFormat::Text => {
            let mut out = plan::render_text(&plan);
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
            format!(
                "{}\n",
                serde_json::to_string_pretty(&v).expect("JSON prints")
            )
        }
        PlanFormat::Mermaid => plan::render_mermaid(&plan),
        PlanFormat::Dot => plan::render_dot(&plan),
    };
    print!("{out}");
    if failed { Exit::Failed } else { Exit::Success }
}

/// Reads the live state of the steps that would run (not those `when` skips).
fn look(
    rb: &crate::runbook::ValidRunbook,
    values: &indexmap::IndexMap<String, serde_json::Value>,
    plan: &plan::Plan,
) -> Result<Vec<Look>, Exit> {
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
        .map_err(|e| {
            eprintln!("error: --live cannot read the secrets: {e}");
            Exit::Failed
        })
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
