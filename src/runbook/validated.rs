//! The validated runbook: every reference resolved, every duration parsed, every `with` typed.
//! Planning and execution consume this, never the raw model.

use std::time::Duration;

use indexmap::IndexMap;

use super::{ConnectionKind, OnFailure, OnSkippedNeeds, Param};
use crate::actions::Action;

#[derive(Debug, Clone)]
pub struct ValidRunbook {
    pub name: String,
    pub version: semver::Version,
    pub description: Option<String>,
    pub owners: Vec<String>,
    pub objectives: ValidObjectives,
    pub params: IndexMap<String, Param>,
    pub secrets: IndexMap<String, SecretSource>,
    pub connections: IndexMap<String, ValidConnection>,
    pub locks: Vec<String>,
    /// `timeout`: the deadline of each run or resume unless `--timeout` gives one.
    pub timeout: Option<Duration>,
    /// In file order, `steps` then `on_failure` then `finally` (see [`StepPhase`]); `needs` are
    /// indices into this list, each within its own part, and the graph is acyclic.
    pub steps: Vec<ValidStep>,
    pub drill: Option<ValidDrill>,
    /// Set by [`super::expand`]: each `for_each` step's id and the indices of the steps it
    /// made, in item order (none, for an empty list).
    pub groups: IndexMap<String, Vec<usize>>,
    /// What validation warns about: the runbook is valid, and runs.
    pub warnings: Vec<crate::diagnostics::Diagnostic>,
}

#[derive(Debug, Clone)]
pub struct ValidDrill {
    /// Connection names a drill may touch.
    pub targets: Vec<String>,
    pub scenarios: IndexMap<String, ValidScenario>,
}

#[derive(Debug, Clone)]
pub struct ValidScenario {
    pub description: Option<String>,
    /// The scenario's own objectives, each falling back to the runbook's.
    pub objectives: ValidObjectives,
    /// Read-only checks; `needs` are indices into this list.
    pub steady_state: Vec<ValidStep>,
    /// `needs` are indices into this list.
    pub inject: Vec<ValidStep>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ValidObjectives {
    pub rto: Option<Duration>,
    pub rpo: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(String),
}

#[derive(Debug, Clone)]
pub struct ValidConnection {
    pub kind: ConnectionKind,
    /// The connection's fields as written (templates unrendered).
    pub fields: serde_json::Value,
}

#[derive(Debug, Clone)]
pub struct ValidStep {
    pub id: String,
    /// JSON pointer of the step in its file (`/steps/3`, `/drill/scenarios/x/inject/0`), where
    /// later diagnostics about it point.
    pub at: String,
    pub action: Action,
    /// `with` as written, templates unrendered: rendered per run (or per plan) and typed again.
    pub with: serde_json::Value,
    pub needs: Vec<usize>,
    pub description: Option<String>,
    pub when: Option<String>,
    pub assert: Option<String>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub on_failure: OnFailure,
    pub on_skipped_needs: OnSkippedNeeds,
    pub compensate: Option<ValidCompensation>,
    pub phase: StepPhase,
    /// `for_each`: validation keeps it, [`super::expand`] makes the steps of it.
    pub for_each: Option<ForEach>,
    pub max_parallel: Option<u32>,
    /// Set by expansion: one of the steps a `for_each` made.
    pub member: Option<Member>,
}

/// The items of a `for_each`.
#[derive(Debug, Clone, PartialEq)]
pub enum ForEach {
    /// The items, written out.
    Items(Vec<serde_json::Value>),
    /// One `{{ expression }}` of params whose value is the list.
    Template(String),
}

/// A step made by a `for_each`: `backup[orders]` of group `backup`.
#[derive(Debug, Clone)]
pub struct Member {
    pub group: String,
    pub item: serde_json::Value,
}

/// Which list of the runbook a step is in. `ValidRunbook::steps` holds `steps`, then
/// `on_failure`, then `finally`; the engine runs the last two only once the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepPhase {
    #[default]
    Main,
    OnFailure,
    Finally,
}

impl StepPhase {
    /// What a diagram adds to a step's action: which ending list it is in.
    pub fn suffix(self) -> &'static str {
        match self {
            StepPhase::Main => "",
            StepPhase::OnFailure => " (on_failure)",
            StepPhase::Finally => " (finally)",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ValidCompensation {
    pub action: Action,
    pub with: serde_json::Value,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RetryPolicy {
    pub attempts: u32,
    #[serde(with = "duration_text")]
    pub delay: Duration,
    pub factor: f64,
    #[serde(with = "duration_text")]
    pub max_delay: Duration,
    pub jitter: bool,
    /// `retry.on_exit_codes`: the exit statuses of a `shell` step that are retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_exit_codes: Option<ExitCodes>,
}

/// A set of exit statuses (1-255), small enough to keep the policy `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitCodes([u64; 4]);

impl ExitCodes {
    pub fn insert(&mut self, code: u8) {
        self.0[usize::from(code / 64)] |= 1 << (code % 64);
    }
    pub fn contains(&self, code: i32) -> bool {
        u8::try_from(code).is_ok_and(|c| self.0[usize::from(c / 64)] & (1 << (c % 64)) != 0)
    }
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (1..=255u8).filter(|&c| self.contains(i32::from(c)))
    }
}

impl serde::Serialize for ExitCodes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl RetryPolicy {
    /// No retry: a step runs once unless its runbook says otherwise, because retrying an action
    /// that is not idempotent is worse than failing.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        attempts: 1,
        delay: Duration::from_secs(2),
        factor: 2.0,
        max_delay: Duration::from_secs(60),
        jitter: true,
        on_exit_codes: None,
    };

    /// Whether another attempt may help after `e`: the exit statuses `on_exit_codes` names, when
    /// it is given and the failure has one; otherwise what the action said.
    pub fn retries(&self, e: &crate::actions::ActionError) -> bool {
        match (&self.on_exit_codes, e.exit_code) {
            (Some(codes), Some(code)) => codes.contains(code),
            _ => e.transient,
        }
    }

    /// The longest total the delays between attempts can add. Jitter adds up to the delay
    /// itself (backon's rule), and no delay exceeds `max_delay`.
    pub fn worst_case_delays(&self) -> Duration {
        let mut total = Duration::ZERO;
        let mut d = self.delay;
        for _ in 1..self.attempts {
            let longest = if self.jitter { d * 2 } else { d };
            total += longest.min(self.max_delay);
            d = Duration::from_secs_f64(
                (d.as_secs_f64() * self.factor).min(self.max_delay.as_secs_f64()),
            );
        }
        total
    }

    /// The delays between attempts, as the engine sleeps them.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        use backon::BackoffBuilder;
        let mut b = backon::ExponentialBuilder::new()
            .with_min_delay(self.delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.factor as f32)
            .with_max_times(self.attempts.saturating_sub(1) as usize);
        if self.jitter {
            b = b.with_jitter();
        }
        let max = self.max_delay;
        b.build().map(move |d| d.min(max))
    }
}

/// The step timeout when neither the step nor `defaults` sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

impl ValidStep {
    /// The longest this step can take: every attempt timing out, with every delay between them.
    pub fn worst_case(&self) -> Duration {
        self.timeout * self.retry.attempts + self.retry.worst_case_delays()
    }
}

impl ValidRunbook {
    /// How many of `steps` are the runbook's `steps`: the rest run once the run ended.
    pub fn main_len(&self) -> usize {
        self.steps
            .iter()
            .position(|s| s.phase != StepPhase::Main)
            .unwrap_or(self.steps.len())
    }

    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }
}

mod duration_text {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::runbook::duration::format(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_decide_a_shell_failure_and_nothing_else() {
        let mut codes = ExitCodes::default();
        codes.insert(75);
        codes.insert(255);
        assert_eq!(codes.iter().collect::<Vec<_>>(), [75, 255]);
        let p = RetryPolicy {
            on_exit_codes: Some(codes),
            ..RetryPolicy::DEFAULT
        };
        let exited = |code: i32| crate::actions::ActionError {
            exit_code: Some(code),
            ..crate::actions::ActionError::transient("exited")
        };
        assert!(p.retries(&exited(75)));
        assert!(!p.retries(&exited(1)));
        assert!(!p.retries(&exited(-1)));
        // Not a process's status (killed by a signal, a refused connection): the action decides.
        assert!(p.retries(&crate::actions::ActionError::transient(
            "killed by signal 9"
        )));
        assert!(!p.retries(&crate::actions::ActionError::permanent("no such file")));
        // Without `on_exit_codes`, what `shell` said: 127 (not found) is permanent.
        let not_found = crate::actions::ActionError {
            exit_code: Some(127),
            ..crate::actions::ActionError::permanent("not found")
        };
        assert!(!RetryPolicy::DEFAULT.retries(&not_found));
    }
}
