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
    match format {
        // Data for tools, exact (JSON escapes control characters itself).
        PlanFormat::Json => out!("{out}"),
        // Read by people, on a terminal or in a review.
        PlanFormat::Text | PlanFormat::Mermaid | PlanFormat::Dot => say!("{out}"),
    }
    Ok(if failed { Exit::Failed } else { Exit::Success })
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
