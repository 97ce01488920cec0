//! Planning: a validated runbook and its params become a [`Plan`], the dry run reviewers read.
//!
//! Invariant: planning never touches the network and never reads a secret. Anything only known at
//! run time (secrets, step outputs, `env`, `run`) is shown as a placeholder.

pub mod diff;
mod dot;
mod json;
mod mermaid;
mod placeholder;
mod text;

use std::collections::HashMap;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Serialize;
use serde_json::Value;

use crate::actions::{Action, DescribeContext, Effect};
use crate::diagnostics::{At, Code, Diagnostic, ptr};
use crate::runbook::{OnFailure, RetryPolicy, ValidConnection, ValidRunbook, duration, templates};

pub use dot::render as render_dot;
pub use json::render as render_json;
pub use mermaid::render as render_mermaid;
pub use text::render as render_text;

/// The version of the plan's JSON form; see docs/plan-json.md. Bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Plan {
    pub format_version: u32,
    pub runbook: RunbookInfo,
    pub params: IndexMap<String, Value>,
    pub objectives: Objectives,
    pub locks: Vec<String>,
    /// The runbook's `timeout`: each run's or resume's deadline unless `--timeout` gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Step ids by wave: every step of a wave can run once all earlier waves are done.
    pub waves: Vec<Vec<String>>,
    pub critical_path: CriticalPath,
    pub steps: Vec<PlannedStep>,
    pub warnings: Vec<String>,
    /// The runbook's drill scenarios (`lifeboat drill --scenario NAME`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scenarios: Vec<PlannedScenario>,
    /// Set when this is the plan of a drill scenario: its steps are the scenario's and the
    /// runbook's, in the order `lifeboat drill` runs them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PlannedScenario {
    pub name: String,
    pub description: Option<String>,
    pub steady_state: Vec<String>,
    pub inject: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RunbookInfo {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub owners: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Objectives {
    pub rto: Option<String>,
    pub rpo: Option<String>,
}

/// The chain of steps that bounds the run's worst-case duration (every attempt timing out).
#[derive(Debug, Serialize)]
pub struct CriticalPath {
    pub steps: Vec<String>,
    pub worst_case: String,
    pub worst_case_seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Runs when its needs succeed.
    Runs,
    /// `when` is false for these params (or a step it needs is skipped).
    Skipped,
    /// `when` depends on something known only at run time.
    Conditional,
}

#[derive(Debug, Serialize)]
pub struct PlannedStep {
    pub id: String,
    pub action: String,
    pub wave: usize,
    pub needs: Vec<String>,
    pub description: Option<String>,
    pub status: StepStatus,
    pub skip_reason: Option<String>,
    pub destructive: bool,
    pub effect: Effect,
    /// What the step would do, in words.
    pub does: String,
    /// `with`, rendered with the params; secrets as `***`, run-time values as `⟨...⟩`.
    pub inputs: Value,
    pub when: Option<String>,
    pub assert: Option<String>,
    pub timeout: String,
    pub retry: RetryPolicy,
    pub on_failure: OnFailure,
    pub worst_case: String,
    pub compensate: Option<PlannedCompensation>,
    /// `on_failure` or `finally` for the steps that run once the run ended; absent for `steps`.
    /// Their `wave` counts within their own list.
    #[serde(skip_serializing_if = "is_main")]
    pub phase: crate::runbook::StepPhase,
}

fn is_main(p: &crate::runbook::StepPhase) -> bool {
    *p == crate::runbook::StepPhase::Main
}

#[derive(Debug, Serialize)]
pub struct PlannedCompensation {
    pub action: String,
    pub does: String,
    pub inputs: Value,
}

/// Kahn's algorithm, smallest index first so the order is stable. `None` when there is a cycle.
pub fn topo_order(needs: &[Vec<usize>]) -> Option<Vec<usize>> {
    let n = needs.len();
    let mut indegree = vec![0usize; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, ns) in needs.iter().enumerate() {
        indegree[i] = ns.len();
        for &d in ns {
            dependents[d].push(i);
        }
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
        .filter(|&i| indegree[i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &j in &dependents[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.push(std::cmp::Reverse(j));
            }
        }
    }
    (order.len() == n).then_some(order)
}

struct Describer<'a> {
    connections: &'a IndexMap<String, ValidConnection>,
    rendered: HashMap<&'a str, String>,
}

impl DescribeContext for Describer<'_> {
    fn connection(&self, name: &str) -> String {
        match self.rendered.get(name) {
            Some(label) => label.clone(),
            None if self.connections.contains_key(name) => name.to_string(),
            None => format!("`{name}`"),
        }
    }
}

/// Builds the plan. Fails only when a template cannot be rendered with these params.
pub fn build(rb: &ValidRunbook, params: &IndexMap<String, Value>) -> Result<Plan, Vec<Diagnostic>> {
    // The steps a `for_each` makes with these params, each planned as the run will run it.
    let expanded;
    let rb = if rb.steps.iter().any(|s| s.for_each.is_some()) {
        expanded = crate::runbook::expand(rb, params)?;
        &expanded
    } else {
        rb
    };
    let env = templates::environment();
    let ctx = placeholder::context(params);
    let shape = placeholder::shape;
    let mut errors = Vec::new();

    let mut rendered_connections = HashMap::new();
    for (name, c) in &rb.connections {
        let at = ptr(&ptr("/connections", name), c.kind.as_str());
        match templates::render_for_plan(&env, &c.fields, &at, &ctx, &shape) {
            Ok(fields) => {
                rendered_connections.insert(name.as_str(), c.kind.label(name, &fields));
            }
            Err(d) => errors.push(d),
        }
    }
    let describer = Describer {
        connections: &rb.connections,
        rendered: rendered_connections,
    };

    let needs: Vec<Vec<usize>> = rb.steps.iter().map(|s| s.needs.clone()).collect();
    let order = topo_order(&needs).expect("validated runbooks are acyclic");
    let mut wave = vec![0usize; rb.steps.len()];
    for &i in &order {
        wave[i] = needs[i].iter().map(|&d| wave[d] + 1).max().unwrap_or(0);
    }

    // Decide `when` where the params alone decide it.
    let mut status = vec![StepStatus::Runs; rb.steps.len()];
    let mut skip_reason: Vec<Option<String>> = vec![None; rb.steps.len()];
    for &i in &order {
        let s = &rb.steps[i];
        if s.on_skipped_needs == crate::runbook::OnSkippedNeeds::Skip
            && let Some(dep) = s.needs.iter().find(|&&d| status[d] == StepStatus::Skipped)
        {
            status[i] = StepStatus::Skipped;
            skip_reason[i] = Some(format!("needs `{}`, which is skipped", rb.steps[*dep].id));
            continue;
        }
        let Some(when) = &s.when else { continue };
        let roots = templates::expression_roots(&env, when);
        if !roots.iter().all(|r| r == "params") {
            status[i] = StepStatus::Conditional;
            continue;
        }
        match env.compile_expression(when).and_then(|e| e.eval(&ctx)) {
            Ok(v) if v.is_true() => {}
            Ok(_) => {
                status[i] = StepStatus::Skipped;
                skip_reason[i] = Some(format!("`when: {when}` is false"));
            }
            Err(e) => errors.push(Diagnostic::new(
                Code::TemplateRender,
                At::node(ptr(&s.at, "when")),
                format!(
                    "`when` fails to evaluate: {}",
                    e.detail().unwrap_or("error")
                ),
            )),
        }
    }

    // Critical path: longest chain by worst-case time; skipped steps take none.
    let mut dist = vec![Duration::ZERO; rb.steps.len()];
    let mut via: Vec<Option<usize>> = vec![None; rb.steps.len()];
    for &i in &order {
        let best = rb.steps[i]
            .needs
            .iter()
            .copied()
            .max_by_key(|&d| (dist[d], std::cmp::Reverse(d)));
        let own = if status[i] == StepStatus::Skipped {
            Duration::ZERO
        } else {
            rb.steps[i].worst_case()
        };
        dist[i] = best.map_or(Duration::ZERO, |d| dist[d]) + own;
        via[i] = best;
    }
    // `on_failure` and `finally` run after the run ended: they are not on its path.
    let main = rb.main_len();
    let end = (0..main).max_by_key(|&i| (dist[i], std::cmp::Reverse(i)));
    let mut path = Vec::new();
    let mut cur = end;
    while let Some(i) = cur {
        path.push(rb.steps[i].id.clone());
        cur = via[i];
    }
    path.reverse();
    let worst = end.map_or(Duration::ZERO, |i| dist[i]);

    let mut steps = Vec::with_capacity(rb.steps.len());
    for (i, s) in rb.steps.iter().enumerate() {
        let at = s.at.clone();
        let item_ctx;
        let ctx = match &s.member {
            Some(m) => {
                item_ctx = minijinja::context! {
                    item => minijinja::Value::from(minijinja::value::Serde(&m.item)),
                    ..ctx.clone()
                };
                &item_ctx
            }
            None => &ctx,
        };
        let (inputs, does) = describe(&env, ctx, &s.action, &s.with, &ptr(&at, "with"), &describer)
            .unwrap_or_else(|d| {
                errors.push(d);
                (Value::Null, String::new())
            });
        let compensate = s.compensate.as_ref().map(|c| {
            let (inputs, does) = describe(
                &env,
                ctx,
                &c.action,
                &c.with,
                &ptr(&ptr(&at, "compensate"), "with"),
                &describer,
            )
            .unwrap_or_else(|d| {
                errors.push(d);
                (Value::Null, String::new())
            });
            PlannedCompensation {
                action: c.action.name().to_string(),
                does,
                inputs,
            }
        });
        steps.push(PlannedStep {
            id: s.id.clone(),
            action: s.action.name().to_string(),
            wave: wave[i] + 1,
            needs: s.needs.iter().map(|&d| rb.steps[d].id.clone()).collect(),
            description: s.description.clone(),
            status: status[i],
            skip_reason: skip_reason[i].clone(),
            destructive: s.action.destructive(),
            effect: s.action.effect(),
            does,
            inputs,
            when: s.when.clone(),
            assert: s.assert.clone(),
            timeout: duration::format(s.timeout),
            retry: s.retry,
            on_failure: s.on_failure,
            worst_case: duration::format(s.worst_case()),
            compensate,
            phase: s.phase,
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let max_wave = wave[..main].iter().copied().max().unwrap_or(0);
    let mut by_wave: Vec<Vec<usize>> = vec![Vec::new(); if main == 0 { 0 } else { max_wave + 1 }];
    // Indices ascend here, so each wave lists its steps in file order.
    for (i, &w) in wave[..main].iter().enumerate() {
        by_wave[w].push(i);
    }
    let waves: Vec<Vec<String>> = by_wave
        .into_iter()
        .map(|w| w.into_iter().map(|i| rb.steps[i].id.clone()).collect())
        .collect();

    let mut warnings = Vec::new();
    if let Some(rto) = rb.objectives.rto
        && worst > rto
    {
        warnings.push(format!(
            "the critical path can take up to {} if every attempt times out, more than the RTO of {}",
            duration::format(worst),
            duration::format(rto)
        ));
    }
    for s in &steps {
        if s.destructive
            && s.compensate.is_none()
            && s.effect == Effect::Changes
            && s.status != StepStatus::Skipped
        {
            warnings.push(format!(
                "destructive step `{}` has no `compensate`: a rollback leaves its change in place",
                s.id
            ));
        }
    }

    Ok(Plan {
        format_version: FORMAT_VERSION,
        runbook: RunbookInfo {
            name: rb.name.clone(),
            version: rb.version.to_string(),
            description: rb.description.clone(),
            owners: rb.owners.clone(),
        },
        params: params.clone(),
        objectives: Objectives {
            rto: rb.objectives.rto.map(duration::format),
            rpo: rb.objectives.rpo.map(duration::format),
        },
        locks: rb.locks.clone(),
        timeout: rb.timeout.map(duration::format),
        scenarios: rb
            .drill
            .iter()
            .flat_map(|d| &d.scenarios)
            .map(|(name, sc)| PlannedScenario {
                name: name.clone(),
                description: sc.description.clone(),
                steady_state: sc.steady_state.iter().map(|s| s.id.clone()).collect(),
                inject: sc.inject.iter().map(|s| s.id.clone()).collect(),
            })
            .collect(),
        scenario: None,
        waves,
        critical_path: CriticalPath {
            steps: path,
            worst_case: duration::format(worst),
            worst_case_seconds: worst.as_secs(),
        },
        steps,
        warnings,
    })
}

/// Renders a `with`, types it again and asks the action to describe itself.
fn describe(
    env: &minijinja::Environment<'_>,
    ctx: &minijinja::Value,
    action: &Action,
    with: &Value,
    at: &str,
    describer: &Describer<'_>,
) -> Result<(Value, String), Diagnostic> {
    let inputs = templates::render_for_plan(env, with, at, ctx, &placeholder::shape)?;
    // Typing can fail only where a template rendered to the wrong type for these params.
    let does = match Action::parse(action.name(), &inputs) {
        // What the values known now break (a key a param makes `..`): refused here as `run` would.
        Ok(Some(a)) if let Some(p) = a.check_rendered().into_iter().next() => {
            return Err(Diagnostic::new(
                Code::TemplateRender,
                At::node(format!("{at}{}", p.field)),
                format!("with these params, `{}`: {}", action.name(), p.message),
            ));
        }
        Ok(Some(a)) => a.describe(describer),
        Ok(None) => unreachable!("the action was typed during validation"),
        Err(e) => {
            return Err(Diagnostic::new(
                Code::TemplateRender,
                At::node(format!("{at}{}", e.field)),
                format!(
                    "with these params, `with` of `{}` is not valid: {}",
                    action.name(),
                    e.message
                ),
            ));
        }
    };
    Ok((inputs, does))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topo_order_is_stable_and_detects_cycles() {
        assert_eq!(
            topo_order(&[vec![], vec![0], vec![0], vec![1, 2]]),
            Some(vec![0, 1, 2, 3])
        );
        assert_eq!(topo_order(&[vec![1], vec![0]]), None);
    }
}
