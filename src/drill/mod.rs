//! Game-day drills: a scenario's steady-state checks, its fault, the runbook's own steps (the
//! recovery), then the checks again, as one ordinary run; then RTO and RPO measured from that
//! run's log, and a report people read.
//!
//! Invariants:
//! - A drill is a run. `compose` builds one `ValidRunbook` from the scenario, so the engine, the
//!   run log, locks, approvals and `resume` are those of every run; nothing here drives steps.
//! - Measurement reads recorded events only ([`measure`]), never a clock: the same log gives the
//!   same numbers today and in an audit next year.
//! - Everything here is pure: no network, no files. `cli/drill.rs` does the I/O.

mod compose;
mod html;
pub(crate) mod markdown;
mod measure;
mod run_report;

pub use compose::{Composed, compose, outside_targets};
pub use html::{FAILED_RGB, PASSED_RGB, render as render_html};
pub use markdown::{against, render as render_markdown};
pub use measure::{Attempt, DrillReport, Evidence, Outcome, StepRow, measure};
pub use run_report::{
    RunReport, WAITING_RGB, render_html as render_run_html, render_markdown as render_run_markdown,
    run_report,
};

use serde::{Deserialize, Serialize};

/// What `run_started` records of a drill: enough to measure and report it from the log alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillInfo {
    pub scenario: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_objective_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_objective_ms: Option<u64>,
    /// Step ids of each part, as they appear in the run.
    pub steady_before: Vec<String>,
    pub inject: Vec<String>,
    pub recovery: Vec<String>,
    pub steady_after: Vec<String>,
    /// Connections the scenario uses that are not drill targets: run anyway, with `--i-know`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside_targets: Vec<String>,
}

/// The part of a drill a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    SteadyBefore,
    Inject,
    Recovery,
    SteadyAfter,
}

impl Part {
    pub fn label(self) -> &'static str {
        match self {
            Part::SteadyBefore => "steady state (before)",
            Part::Inject => "inject",
            Part::Recovery => "recovery",
            Part::SteadyAfter => "steady state (after)",
        }
    }
}
