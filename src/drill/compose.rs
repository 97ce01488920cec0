//! One scenario and the runbook's steps become one runbook: steady state, inject, recovery,
//! steady state again, each part starting only when the one before it has finished.

use indexmap::IndexMap;
use serde_json::Value;

use super::DrillInfo;
use crate::runbook::{OnFailure, OnSkippedNeeds, ValidRunbook, ValidStep};

/// A drill scenario, ready to run.
#[derive(Debug, Clone)]
pub struct Composed {
    pub runbook: ValidRunbook,
    pub info: DrillInfo,
}

/// Builds the run of scenario `name`. The error is a sentence for the person who typed the name.
pub fn compose(rb: &ValidRunbook, name: &str) -> Result<Composed, String> {
    let Some(drill) = &rb.drill else {
        return Err(format!(
            "runbook `{}` has no `drill` section, so it has no scenarios to run (see docs/drills.md)",
            rb.name
        ));
    };
    let Some(sc) = drill.scenarios.get(name) else {
        let names: Vec<&str> = drill.scenarios.keys().map(String::as_str).collect();
        return Err(format!(
            "runbook `{}` has no scenario `{name}`{}; its scenarios: {}",
            rb.name,
            crate::diagnostics::did_you_mean(name, names.iter().copied())
                .map(|h| format!(" ({h})"))
                .unwrap_or_default(),
            names.join(", ")
        ));
    };
    let mut steps: Vec<ValidStep> = Vec::new();
    let (steady_before, before_sinks) = append(&mut steps, &sc.steady_state, "before.", &[]);
    let (inject, inject_sinks) = append(&mut steps, &sc.inject, "", &before_sinks);
    let main = rb.main_len();
    let (recovery, recovery_sinks) = append(&mut steps, &rb.steps[..main], "", &inject_sinks);
    let (steady_after, _) = append(&mut steps, &sc.steady_state, "after.", &recovery_sinks);
    // `on_failure` and `finally` stay what they are: lists the engine runs once the drill ended.
    let offset = steps.len();
    for s in &rb.steps[main..] {
        let mut s = s.clone();
        for n in &mut s.needs {
            *n = *n - main + offset;
        }
        steps.push(s);
    }
    // Breaking a service that was not healthy to begin with proves nothing and hurts: a failed
    // check before the fault always stops the drill, whatever its `on_failure` says.
    for s in &mut steps[..steady_before.len()] {
        s.on_failure = OnFailure::Abort;
    }
    let mut runbook = rb.clone();
    runbook.steps = steps;
    runbook.drill = None;
    runbook.objectives = sc.objectives;
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    Ok(Composed {
        runbook,
        info: DrillInfo {
            scenario: name.to_string(),
            description: sc.description.clone(),
            rto_objective_ms: sc.objectives.rto.map(ms),
            rpo_objective_ms: sc.objectives.rpo.map(ms),
            steady_before,
            inject,
            recovery,
            steady_after,
            outside_targets: Vec::new(),
        },
    })
}

/// Appends one part. Its first steps (those needing nothing) are made to need the last steps of
/// the part before, and run even if one of those was skipped by its `when`: a part waits for the
/// one before to end, not for every step of it to have run. Returns the part's ids and last steps.
fn append(
    steps: &mut Vec<ValidStep>,
    part: &[ValidStep],
    prefix: &str,
    after: &[usize],
) -> (Vec<String>, Vec<usize>) {
    let offset = steps.len();
    let mut ids = Vec::with_capacity(part.len());
    for s in part {
        let mut s = s.clone();
        s.id = format!("{prefix}{}", s.id);
        if s.needs.is_empty() {
            s.needs = after.to_vec();
            if !after.is_empty() {
                s.on_skipped_needs = OnSkippedNeeds::Run;
            }
        } else {
            for n in &mut s.needs {
                *n += offset;
            }
        }
        ids.push(s.id.clone());
        steps.push(s);
    }
    let needed: std::collections::HashSet<usize> =
        part.iter().flat_map(|s| s.needs.iter().copied()).collect();
    let sinks = (0..part.len())
        .filter(|i| !needed.contains(i))
        .map(|i| i + offset)
        .collect();
    (ids, sinks)
}

/// Connections the composed run would use that are not drill targets, by name. A name given by
/// a template is rendered with the params; one that needs more than params (a step's output) is
/// listed as written, since nobody can tell before the run which connection it will be.
pub fn outside_targets(
    rb: &ValidRunbook,
    targets: &[String],
    params: &IndexMap<String, Value>,
) -> Vec<String> {
    let env = crate::runbook::templates::environment();
    let ctx = minijinja::Value::from(minijinja::value::Serde(
        serde_json::json!({ "params": params }),
    ));
    let mut out: Vec<String> = Vec::new();
    let uses = rb.steps.iter().flat_map(|s| {
        let own = s.action.connections();
        let comp = s
            .compensate
            .as_ref()
            .map(|c| c.action.connections())
            .unwrap_or_default();
        own.into_iter().chain(comp)
    });
    for u in uses {
        let name = if crate::actions::is_template(u.name) {
            env.render_str(u.name, &ctx)
                .unwrap_or_else(|_| u.name.to_string())
        } else {
            u.name.to_string()
        };
        if !targets.contains(&name) && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RB: &str = r#"
apiVersion: lifeboat/v1
kind: Runbook
metadata: {name: t, version: 1.0.0}
objectives: {rto: 30m, rpo: 15m}
params:
  db: {type: string, default: main}
connections:
  main: {postgres: {url: "postgres://x@127.0.0.1/a"}}
  other: {postgres: {url: "postgres://x@127.0.0.1/b"}}
steps:
  - {id: a, action: wait, with: {for: 1s}}
  - {id: b, action: wait, with: {for: 1s}, needs: [a]}
  - {id: c, action: wait, with: {for: 1s}, needs: [a]}
  - {id: d, action: postgres.query, with: {connection: other, sql: select 1}, needs: [b]}
drill:
  targets: [main]
  scenarios:
    broken:
      objectives: {rto: 5m}
      steady_state:
        - {id: healthy, action: postgres.query, with: {connection: "{{ params.db }}", sql: select 1}, on_failure: continue}
        - {id: counted, action: postgres.query, with: {connection: main, sql: select 1}, needs: [healthy]}
      inject:
        - {id: break_it, action: postgres.query, with: {connection: main, sql: drop table t, writes: true}}
"#;

    fn rb() -> ValidRunbook {
        crate::runbook::load_str("t.yaml", RB)
            .result
            .expect("the test runbook is valid")
    }

    fn ids(rb: &ValidRunbook, needs: &[usize]) -> Vec<String> {
        needs.iter().map(|&n| rb.steps[n].id.clone()).collect()
    }

    #[test]
    fn parts_run_in_order_each_after_the_last_steps_of_the_one_before() {
        let c = compose(&rb(), "broken").unwrap();
        let r = &c.runbook;
        let order: Vec<&str> = r.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            order,
            [
                "before.healthy",
                "before.counted",
                "break_it",
                "a",
                "b",
                "c",
                "d",
                "after.healthy",
                "after.counted"
            ]
        );
        let needs = |id: &str| ids(r, &r.steps[r.step_index(id).unwrap()].needs);
        assert!(needs("before.healthy").is_empty());
        assert_eq!(needs("before.counted"), ["before.healthy"]);
        assert_eq!(needs("break_it"), ["before.counted"]);
        assert_eq!(needs("a"), ["break_it"]);
        assert_eq!(needs("b"), ["a"]);
        // The recovery's last steps are c and d: the checks after wait for both.
        assert_eq!(needs("after.healthy"), ["c", "d"]);
        assert_eq!(needs("after.counted"), ["after.healthy"]);
        let s = |id: &str| &r.steps[r.step_index(id).unwrap()];
        assert_eq!(s("a").on_skipped_needs, OnSkippedNeeds::Run);
        assert_eq!(s("b").on_skipped_needs, OnSkippedNeeds::Skip);
        // A check before the fault always stops the drill when it fails; after, it is as written.
        assert_eq!(s("before.healthy").on_failure, OnFailure::Abort);
        assert_eq!(s("after.healthy").on_failure, OnFailure::Continue);
        assert!(
            crate::plan::topo_order(&r.steps.iter().map(|s| s.needs.clone()).collect::<Vec<_>>())
                .is_some()
        );
        assert_eq!(c.info.inject, ["break_it"]);
        assert_eq!(c.info.recovery, ["a", "b", "c", "d"]);
        assert_eq!(c.info.steady_after, ["after.healthy", "after.counted"]);
        // The scenario's RTO, the runbook's RPO.
        assert_eq!(c.info.rto_objective_ms, Some(300_000));
        assert_eq!(c.info.rpo_objective_ms, Some(900_000));
    }

    #[test]
    fn unknown_scenarios_and_runbooks_without_drills_are_refused_by_name() {
        let e = compose(&rb(), "brokne").unwrap_err();
        assert!(e.contains("no scenario `brokne`"), "{e}");
        assert!(e.contains("did you mean `broken`"), "{e}");
        let mut plain = rb();
        plain.drill = None;
        assert!(
            compose(&plain, "broken")
                .unwrap_err()
                .contains("no `drill` section")
        );
    }

    #[test]
    fn connections_outside_the_targets_are_found_through_templates() {
        let r = rb();
        let c = compose(&r, "broken").unwrap();
        let targets = &r.drill.as_ref().unwrap().targets;
        let mut params = IndexMap::new();
        params.insert("db".to_string(), Value::from("main"));
        assert_eq!(outside_targets(&c.runbook, targets, &params), ["other"]);
        params.insert("db".to_string(), Value::from("prod"));
        assert_eq!(
            outside_targets(&c.runbook, targets, &params),
            ["prod", "other"]
        );
    }
}
