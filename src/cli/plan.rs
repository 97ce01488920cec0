//! `lifeboat plan FILE`

use std::path::Path;

use super::{DiagnosticFormat, PlanFormat, parse_params, validate::print};
use crate::exit::Exit;
use crate::plan;
use crate::runbook::{load_file, params};

pub(super) fn run(file: &Path, given: &[String], format: PlanFormat) -> Exit {
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
    let plan = match plan::build(&rb, &values) {
        Ok(p) => p,
        Err(diags) => {
            print(&loaded.source, diags, DiagnosticFormat::Human);
            return Exit::Invalid;
        }
    };
    let out = match format {
        PlanFormat::Text => plan::render_text(&plan),
        PlanFormat::Json => plan::render_json(&plan),
        PlanFormat::Mermaid => plan::render_mermaid(&plan),
        PlanFormat::Dot => plan::render_dot(&plan),
    };
    print!("{out}");
    Exit::Success
}
