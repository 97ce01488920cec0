//! The plan as text: what a reviewer reads in a pull request or an on-call engineer before `run`.

use std::fmt::Write;

use serde_json::Value;

use super::{Plan, StepStatus};

pub fn render(plan: &Plan) -> String {
    let mut o = String::new();
    let r = &plan.runbook;
    match &plan.scenario {
        Some(sc) => {
            let _ = writeln!(o, "Plan for {} {}, drill scenario {sc}", r.name, r.version);
            let _ = writeln!(
                o,
                "  steady state (before.*), inject, the runbook's steps, steady state again (after.*)"
            );
        }
        None => {
            let _ = writeln!(o, "Plan for {} {}", r.name, r.version);
        }
    }
    if let Some(d) = &r.description {
        let _ = writeln!(o, "  {d}");
    }
    if !r.owners.is_empty() {
        let _ = writeln!(o, "Owners:     {}", r.owners.join(", "));
    }
    if !plan.params.is_empty() {
        let p: Vec<String> = plan
            .params
            .iter()
            .map(|(k, v)| format!("{k}={}", scalar(v)))
            .collect();
        let _ = writeln!(o, "Params:     {}", p.join(", "));
    }
    let objectives: Vec<String> = [("RTO", &plan.objectives.rto), ("RPO", &plan.objectives.rpo)]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
        .collect();
    if !objectives.is_empty() {
        let _ = writeln!(o, "Objectives: {}", objectives.join(", "));
    }
    if !plan.locks.is_empty() {
        let _ = writeln!(o, "Locks:      {}", plan.locks.join(", "));
    }
    if let Some(t) = &plan.timeout {
        let _ = writeln!(
            o,
            "Timeout:    {t} for each run or resume, then running steps are cancelled and the run rolls back"
        );
    }
    // Of `steps`: `on_failure` and `finally` are counted apart.
    let main = |s: &&super::PlannedStep| s.phase == crate::runbook::StepPhase::Main;
    let destructive = plan
        .steps
        .iter()
        .filter(main)
        .filter(|s| s.destructive && s.status != StepStatus::Skipped)
        .count();
    let skipped = plan
        .steps
        .iter()
        .filter(main)
        .filter(|s| s.status == StepStatus::Skipped)
        .count();
    let ending = plan.steps.len() - plan.steps.iter().filter(main).count();
    let _ = writeln!(
        o,
        "Steps:      {} in {} wave(s); {destructive} destructive; {skipped} skipped{}",
        plan.steps.len() - ending,
        plan.waves.len(),
        if ending > 0 {
            format!("; {ending} in on_failure/finally")
        } else {
            String::new()
        }
    );

    let by_id: std::collections::HashMap<&str, &super::PlannedStep> =
        plan.steps.iter().map(|s| (s.id.as_str(), s)).collect();
    for (w, ids) in plan.waves.iter().enumerate() {
        let _ = writeln!(o, "\nWave {}", w + 1);
        for id in ids {
            let Some(s) = by_id.get(id.as_str()) else {
                continue;
            };
            write_step(&mut o, s);
        }
    }
    for (phase, heading) in [
        (
            crate::runbook::StepPhase::OnFailure,
            "On failure (only when the run failed, after its rollback)",
        ),
        (
            crate::runbook::StepPhase::Finally,
            "Finally (at the end of every run that ended, after `on_failure`)",
        ),
    ] {
        let list: Vec<&super::PlannedStep> =
            plan.steps.iter().filter(|s| s.phase == phase).collect();
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(o, "\n{heading}");
        for s in list {
            write_step(&mut o, s);
        }
    }

    let cp = &plan.critical_path;
    let _ = writeln!(
        o,
        "\nCritical path (worst case {}): {}",
        cp.worst_case,
        cp.steps.join(" -> ")
    );
    if !plan.scenarios.is_empty() {
        let _ = writeln!(
            o,
            "\nDrill scenarios (plan one with --scenario NAME, run it with `lifeboat drill`):"
        );
        for sc in &plan.scenarios {
            let _ = writeln!(
                o,
                "  {}: steady state [{}], inject [{}]",
                sc.name,
                sc.steady_state.join(", "),
                sc.inject.join(", ")
            );
            if let Some(d) = &sc.description {
                let _ = writeln!(o, "      {}", d.trim());
            }
        }
    }
    for w in &plan.warnings {
        let _ = writeln!(o, "warning: {w}");
    }
    o
}

fn write_inputs(o: &mut String, label: &str, inputs: &Value, whole: bool) {
    let Value::Object(map) = inputs else { return };
    if map.is_empty() {
        return;
    }
    let _ = writeln!(o, "      {label}:");
    for (k, v) in map {
        match v {
            Value::String(text) if whole && text.contains('\n') => {
                let _ = writeln!(o, "        {k}: |");
                for line in text.lines() {
                    let _ = writeln!(o, "          {line}");
                }
            }
            _ => {
                let _ = writeln!(o, "        {k}: {}", scalar(v));
            }
        }
    }
}

/// A value on one line: strings bare (multi-line ones folded), anything else as JSON.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if s.contains('\n') => {
            let lines: Vec<&str> = s.lines().collect();
            format!(
                "{} (+{} lines)",
                lines.first().unwrap_or(&""),
                lines.len().saturating_sub(1)
            )
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One step: what it does, its limits, its inputs.
fn write_step(o: &mut String, s: &super::PlannedStep) {
    let mut tags = Vec::new();
    if s.destructive {
        tags.push("DESTRUCTIVE".to_string());
    }
    if s.effect == crate::actions::Effect::Irreversible {
        tags.push("NOT REVERSIBLE".to_string());
    }
    match s.status {
        StepStatus::Skipped => tags.push("SKIPPED".into()),
        StepStatus::Conditional => tags.push("CONDITIONAL".into()),
        StepStatus::Runs => {}
    }
    let tags = if tags.is_empty() {
        String::new()
    } else {
        format!("  [{}]", tags.join(", "))
    };
    let _ = writeln!(o, "  {} ({}){tags}", s.id, s.action);
    if let Some(d) = &s.description {
        let _ = writeln!(o, "      {d}");
    }
    let _ = writeln!(o, "      does:    {}", s.does);
    if !s.needs.is_empty() {
        let _ = writeln!(o, "      needs:   {}", s.needs.join(", "));
    }
    if let Some(reason) = &s.skip_reason {
        let _ = writeln!(o, "      skipped: {reason}");
    } else if let Some(w) = &s.when {
        let _ = writeln!(o, "      when:    {w}");
    }
    if let Some(a) = &s.assert {
        let _ = writeln!(o, "      assert:  {a}");
    }
    let attempts = if s.retry.attempts == 1 {
        "1 attempt".to_string()
    } else {
        format!("{} attempts", s.retry.attempts)
    };
    let on_failure = match s.on_failure {
        crate::runbook::OnFailure::Abort => "",
        crate::runbook::OnFailure::Continue => ", continue on failure",
    };
    let _ = writeln!(
        o,
        "      limits:  timeout {}, {attempts}{on_failure} (worst case {})",
        s.timeout, s.worst_case
    );
    // A destructive step is shown whole: a reviewer reads every line of what it runs.
    write_inputs(o, "with", &s.inputs, s.destructive);
    if let Some(c) = &s.compensate {
        let _ = writeln!(o, "      undo:    {} ({})", c.does, c.action);
    }
}
