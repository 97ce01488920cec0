//! Semantic checks: everything the schema cannot say. All problems are collected, not just the
//! first, so one `validate` shows the author everything to fix.

use std::collections::{HashMap, HashSet};

use indexmap::IndexMap;
use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value;

use super::model::{self, Runbook};
use super::templates::{self, Scope};
use super::{
    ConnectionKind, DEFAULT_TIMEOUT, RetryPolicy, SecretSource, StepPhase, ValidCompensation,
    ValidConnection, ValidDrill, ValidObjectives, ValidRunbook, ValidScenario, ValidStep, duration,
    params, schema,
};
use crate::actions::{Action, Effect, Output, outputs_of};
use crate::diagnostics::{At, Code, Diagnostic, did_you_mean, ptr};

pub fn validate(doc: &Value) -> Result<ValidRunbook, Vec<Diagnostic>> {
    // The schema check and the semantic checks only read the document: run them side by side. They
    // meet at the end, where a semantic message that repeats a schema error is dropped.
    std::thread::scope(|scope| {
        let schema_errors = scope.spawn(|| schema::check(doc));
        let typed: Result<Runbook, _> = serde_path_to_error::deserialize(doc);
        let checked = typed.as_ref().ok().map(|rb| {
            let mut cx = Checker {
                out: Vec::new(),
                warnings: Vec::new(),
                unless_schema: Vec::new(),
                env: templates::environment(),
            };
            let valid = cx.runbook(rb);
            (valid, cx)
        });
        let schema_errors = schema_errors
            .join()
            .expect("the schema check does not panic");
        let Some((valid, cx)) = checked else {
            if !schema_errors.is_empty() {
                return Err(schema_errors);
            }
            // The schema is generated from these types, so this is rare: report it where serde stopped.
            let e = typed.expect_err("only a typing failure leaves nothing checked");
            let pointer: String = e
                .path()
                .iter()
                .map(|s| format!("/{}", crate::diagnostics::escape_segment(&s.to_string())))
                .collect();
            return Err(vec![Diagnostic::new(
                Code::InvalidValue,
                At::node(pointer),
                e.into_inner().to_string(),
            )]);
        };
        // Order does not matter here: diagnostics are printed sorted by position.
        let soft: Vec<Diagnostic> = cx
            .unless_schema
            .into_iter()
            .filter(|(under, _)| !schema_reported(&schema_errors, under))
            .map(|(_, d)| d)
            .collect();
        let mut all = schema_errors;
        all.extend(cx.out);
        all.extend(soft);
        match valid {
            Some(mut v) if all.is_empty() => {
                v.warnings = cx.warnings;
                Ok(v)
            }
            _ => Err(all),
        }
    })
}

/// What every list of steps is checked against.
#[derive(Clone, Copy)]
struct Shared<'a> {
    connections: &'a indexmap::IndexMap<String, ValidConnection>,
    default_timeout: std::time::Duration,
    default_retry: RetryPolicy,
    params: &'a [&'a str],
    params_declared: &'a indexmap::IndexMap<String, super::Param>,
    secrets: &'a [&'a str],
    env_secrets: &'a [(&'a str, &'a str)],
}

/// Which list a step is in: the recovery (`steps`), its ending handlers, or a drill scenario's
/// part.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Recovery,
    OnFailure,
    Finally,
    SteadyState,
    Inject,
}

impl Phase {
    fn with_place(self) -> &'static str {
        match self {
            Phase::Recovery | Phase::OnFailure | Phase::Finally => "`with`",
            Phase::SteadyState => "`with` of a steady-state check",
            Phase::Inject => "`with` of an inject step",
        }
    }
    fn among(self) -> &'static str {
        match self {
            Phase::Recovery => "",
            Phase::OnFailure => " of `on_failure`",
            Phase::Finally => " of `finally`",
            Phase::SteadyState => " among this scenario's `steady_state` checks",
            Phase::Inject => " among this scenario's `inject` steps",
        }
    }
    fn needs_help(self) -> Option<&'static str> {
        match self {
            Phase::Recovery => None,
            Phase::OnFailure | Phase::Finally => Some(
                "`on_failure` and `finally` start after every step of `steps` settled: `needs` names steps of the same list, and `steps.<id>` reads any step of `steps`",
            ),
            Phase::SteadyState | Phase::Inject => Some(
                "a drill orders its parts itself (steady state, inject, the runbook's steps, steady state again): `needs` names steps of the same part",
            ),
        }
    }
    fn ending(self) -> Option<StepPhase> {
        match self {
            Phase::OnFailure => Some(StepPhase::OnFailure),
            Phase::Finally => Some(StepPhase::Finally),
            _ => None,
        }
    }
}

/// The steps of `steps`, as the lists after them (`on_failure`, `finally`) may read them.
type Earlier<'a> = HashMap<&'a str, (usize, &'static [Output])>;

struct Checker {
    out: Vec<Diagnostic>,
    /// Reported, and the runbook still valid (`Code::is_warning`).
    warnings: Vec<Diagnostic>,
    /// Diagnostics to drop when the schema reported something at or under the pointer beside them
    /// (a second, overlapping message would only be noise).
    unless_schema: Vec<(String, Diagnostic)>,
    env: minijinja::Environment<'static>,
}

impl Checker {
    /// LB0127: values pasted unquoted into the fields of `with` that are code.
    fn pasted(
        &mut self,
        action: &crate::actions::Action,
        with: &Value,
        at: &str,
        params: &indexmap::IndexMap<String, super::Param>,
    ) {
        for (field, lang) in action.code() {
            let Some(Value::String(text)) = with.pointer(&field) else {
                continue;
            };
            for hole in super::injection::unquoted(text, lang, params) {
                let (what, help) = match lang {
                    crate::actions::Language::Shell => (
                        "script",
                        format!(
                            "pass it as an argument (`argv`), or through the step's `env` as \"$VAR\", or quote it: `{{{{ {hole} | shell_quote }}}}`"
                        ),
                    ),
                    crate::actions::Language::Cypher => (
                        "Cypher",
                        "pass it as a parameter (`$name` in `cypher`, the value in `params`)"
                            .to_string(),
                    ),
                    crate::actions::Language::Sql => (
                        "SQL",
                        format!(
                            "pass it as a bind parameter (`$1` in `sql`, the value in `params`), or quote it: `{{{{ {hole} | sql_literal }}}}` (a value) or `| sql_ident` (a name)"
                        ),
                    ),
                };
                self.warnings.push(
                    Diagnostic::new(
                        Code::UnquotedValue,
                        At::text(format!("{at}/with{field}"), hole.to_string()),
                        format!("`{{{{ {hole} }}}}` is pasted into this {what} as it is: a quote or `;` in the value would become code"),
                    )
                    .help(help),
                );
            }
        }
    }
}

/// Whether the schema reported something at or under `pointer`.
fn schema_reported(schema_errors: &[Diagnostic], pointer: &str) -> bool {
    schema_errors.iter().any(|d| match &d.at {
        At::Node { pointer: p, .. } | At::Text { pointer: p, .. } => {
            p == pointer
                || (p.starts_with(pointer) && p.as_bytes().get(pointer.len()) == Some(&b'/'))
        }
        _ => false,
    })
}

impl Checker {
    fn unless_schema(&mut self, under: impl Into<String>, d: Diagnostic) {
        self.unless_schema.push((under.into(), d));
    }

    fn duration(
        &mut self,
        d: Option<&model::DurationText>,
        pointer: &str,
    ) -> Option<std::time::Duration> {
        let d = d?;
        let Some(s) = d.0.as_str() else {
            // Reported by the schema as a type error.
            return None;
        };
        match duration::parse(s) {
            Ok(v) => Some(v),
            Err(why) => {
                let d = Diagnostic::new(
                    Code::InvalidDuration,
                    At::node(pointer),
                    format!("invalid duration: {why}"),
                );
                self.unless_schema(pointer, d);
                None
            }
        }
    }

    fn retry(&mut self, r: Option<&model::Retry>, base: RetryPolicy, pointer: &str) -> RetryPolicy {
        let Some(r) = r else { return base };
        let mut p = base;
        if let Some(a) = r.attempts {
            p.attempts = a.max(1);
        }
        if let Some(d) = self.duration(r.delay.as_ref(), &ptr(pointer, "delay")) {
            p.delay = d;
        }
        if let Some(f) = r.factor {
            p.factor = f;
        }
        if let Some(d) = self.duration(r.max_delay.as_ref(), &ptr(pointer, "max_delay")) {
            p.max_delay = d;
        }
        if let Some(j) = r.jitter {
            p.jitter = j;
        }
        if let Some(codes) = &r.on_exit_codes {
            let mut set = crate::runbook::validated::ExitCodes::default();
            for c in codes {
                set.insert(c.0);
            }
            p.on_exit_codes = Some(set);
        }
        if p.max_delay < p.delay && (r.delay.is_some() || r.max_delay.is_some()) {
            self.out.push(
                Diagnostic::new(
                    Code::InvalidRetry,
                    At::node(pointer),
                    "`max_delay` is shorter than `delay`",
                )
                .help("`max_delay` caps the growing delay; make it at least `delay`"),
            );
        }
        p
    }

    /// `retry.on_exit_codes` on a step whose action has no exit status would never apply: an
    /// author who wrote it expects something that cannot happen. (In `defaults.retry` it is
    /// for the `shell` steps.)
    fn exit_codes_only_for_shell(&mut self, r: Option<&model::Retry>, action: &str, pointer: &str) {
        if r.is_some_and(|r| r.on_exit_codes.is_some()) && action != "shell" {
            self.out.push(
                Diagnostic::new(
                    Code::InvalidRetry,
                    At::node(ptr(pointer, "on_exit_codes")),
                    format!("`{action}` runs no process: it has no exit status to retry on"),
                )
                .help("`on_exit_codes` is for `shell` steps; other actions say themselves which of their errors are transient"),
            );
        }
    }

    fn runbook(&mut self, rb: &Runbook) -> Option<ValidRunbook> {
        let version = match &rb.metadata.version.0 {
            Value::String(s) => semver::Version::parse(s).map_err(|e| e.to_string()),
            other => Err(format!("YAML read it as {}", schema::short(other))),
        };
        let version = match version {
            Ok(v) => Some(v),
            Err(why) => {
                self.unless_schema(
                    "/metadata/version",
                    Diagnostic::new(
                        Code::InvalidVersion,
                        At::node("/metadata/version"),
                        format!("`metadata.version` is not a semantic version: {why}"),
                    )
                    .help("write three numbers, quoted if needed: version: \"2.1.0\""),
                );
                None
            }
        };
        let objectives = ValidObjectives {
            rto: rb
                .objectives
                .as_ref()
                .and_then(|o| self.duration(o.rto.as_ref(), "/objectives/rto")),
            rpo: rb
                .objectives
                .as_ref()
                .and_then(|o| self.duration(o.rpo.as_ref(), "/objectives/rpo")),
        };
        for (name, p) in &rb.params {
            params::check_declaration(name, p, &mut self.out);
        }
        for (section, names) in [
            ("params", rb.params.keys().collect::<Vec<_>>()),
            ("secrets", rb.secrets.keys().collect()),
            ("connections", rb.connections.keys().collect()),
        ] {
            for name in names {
                if !is_name(name) {
                    self.out.push(
                        Diagnostic::new(Code::InvalidValue, At::key(ptr(&format!("/{section}"), name)), format!("invalid name `{name}` in `{section}`"))
                            .help("names are letters, digits and `_`, not starting with a digit, so templates can use them"),
                    );
                }
            }
        }
        let secrets: indexmap::IndexMap<String, SecretSource> = rb
            .secrets
            .iter()
            .filter_map(|(name, s)| {
                let src = match (&s.env, &s.file) {
                    (Some(e), None) => SecretSource::Env(e.clone()),
                    (None, Some(f)) => SecretSource::File(f.clone()),
                    _ => return None, // reported by the schema (exactly one property)
                };
                Some((name.clone(), src))
            })
            .collect();
        let param_names: Vec<&str> = rb.params.keys().map(String::as_str).collect();
        let secret_names: Vec<&str> = rb.secrets.keys().map(String::as_str).collect();
        let env_secrets: Vec<(&str, &str)> = secrets
            .iter()
            .filter_map(|(name, src)| match src {
                SecretSource::Env(var) => Some((var.as_str(), name.as_str())),
                SecretSource::File(_) => None,
            })
            .collect();

        let mut connections = indexmap::IndexMap::new();
        for (name, c) in &rb.connections {
            let at = ptr("/connections", name);
            let fields = serde_json::to_value(c).unwrap_or(Value::Null);
            let kinds: Vec<ConnectionKind> = ConnectionKind::ALL
                .iter()
                .copied()
                .filter(|k| fields.get(k.as_str()).is_some())
                .collect();
            let scope = Scope {
                secrets: Some(&secret_names),
                ..Scope::bare("a connection", &param_names, &env_secrets)
            };
            templates::check_value(&self.env, &fields, &at, &scope, &mut self.out);
            if let [kind] = kinds[..] {
                connections.insert(
                    name.clone(),
                    ValidConnection {
                        kind,
                        fields: fields[kind.as_str()].clone(),
                    },
                );
            }
        }

        let run_timeout = self.duration(rb.timeout.as_ref(), "/timeout");
        let default_timeout = rb
            .defaults
            .as_ref()
            .and_then(|d| self.duration(d.timeout.as_ref(), "/defaults/timeout"))
            .unwrap_or(DEFAULT_TIMEOUT);
        let default_retry = self.retry(
            rb.defaults.as_ref().and_then(|d| d.retry.as_ref()),
            RetryPolicy::DEFAULT,
            "/defaults/retry",
        );

        let shared = Shared {
            connections: &connections,
            default_timeout,
            default_retry,
            params: &param_names,
            params_declared: &rb.params,
            secrets: &secret_names,
            env_secrets: &env_secrets,
        };
        let none = Earlier::new();
        let steps = self.steps(&rb.steps, "/steps", Phase::Recovery, &shared, &none);
        let handlers = self.handlers(rb, &shared);
        let drill = rb
            .drill
            .as_ref()
            .and_then(|d| self.drill(d, rb, objectives, &shared));

        if !self.out.is_empty() {
            return None;
        }
        let mut steps = steps?;
        steps.extend(handlers?);
        let drill = match rb.drill {
            Some(_) => Some(drill?),
            None => None,
        };
        Some(ValidRunbook {
            name: rb.metadata.name.clone(),
            version: version?,
            description: rb.metadata.description.clone(),
            owners: rb.metadata.owners.clone(),
            objectives,
            params: rb.params.clone(),
            secrets,
            connections,
            locks: rb.locks.clone(),
            timeout: run_timeout,
            steps,
            drill,
            groups: IndexMap::new(),
            warnings: Vec::new(),
        })
    }

    /// Checks one list of steps, a DAG of its own: the runbook's `steps`, or a scenario's
    /// `steady_state` or `inject`. `needs` and `steps.<id>` resolve only within the list.
    fn steps(
        &mut self,
        group: &[model::Step],
        base: &str,
        phase: Phase,
        shared: &Shared<'_>,
        earlier: &Earlier<'_>,
    ) -> Option<Vec<ValidStep>> {
        let Shared {
            connections,
            default_timeout,
            default_retry,
            params: param_names,
            secrets: secret_names,
            env_secrets,
            ..
        } = *shared;
        // Ids first: every later check resolves names through them.
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, s) in group.iter().enumerate() {
            if let Some(&first) = index.get(s.id.as_str()) {
                self.out.push(
                    Diagnostic::new(
                        Code::DuplicateStepId,
                        At::node(format!("{base}/{i}/id")),
                        format!("duplicate step id `{}`", s.id),
                    )
                    .label(format!("also the id of step #{}", first + 1))
                    .help("step ids must be unique within a runbook"),
                );
            } else {
                index.insert(&s.id, i);
            }
        }

        let mut graph: DiGraph<usize, usize> = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..group.len()).map(|i| graph.add_node(i)).collect();
        let mut needs: Vec<Vec<usize>> = vec![Vec::new(); group.len()];
        for (i, s) in group.iter().enumerate() {
            for (j, n) in s.needs.iter().enumerate() {
                match index.get(n.as_str()) {
                    Some(&dep) => {
                        if !needs[i].contains(&dep) {
                            needs[i].push(dep);
                            graph.add_edge(nodes[dep], nodes[i], j);
                        }
                    }
                    None => self.out.push(
                        Diagnostic::new(
                            Code::UnknownStep,
                            At::node(format!("{base}/{i}/needs/{j}")),
                            format!(
                                "step `{}` needs `{n}`, which is not a step{}",
                                s.id,
                                phase.among()
                            ),
                        )
                        .label("no step has this id")
                        .help_opt(
                            did_you_mean(n, index.keys().copied())
                                .or_else(|| phase.needs_help().map(String::from)),
                        ),
                    ),
                }
            }
        }
        let acyclic = self.cycles(&graph, group, base);
        let reach = templates::Reach::new(&needs);

        // An earlier list's steps are numbered after this list's, so `Upstream` can tell them.
        let mut step_outputs: HashMap<&str, (usize, &'static [Output])> = earlier
            .iter()
            .map(|(&id, &(i, o))| (id, (group.len() + i, o)))
            .collect();
        for (id, &i) in &index {
            if let Some(o) = outputs_of(&group[i].action) {
                step_outputs.insert(id, (i, o));
            }
        }

        let groups: HashSet<&str> = group
            .iter()
            .filter(|s| s.for_each.is_some())
            .map(|s| s.id.as_str())
            .collect();
        let mut steps = Vec::new();
        for (i, s) in group.iter().enumerate() {
            let at = format!("{base}/{i}");
            self.for_each(s, &at, shared);
            let action = self.action(&s.action, &s.with, &at, connections);
            if let Some(a) = &action {
                self.pasted(a, &s.with, &at, shared.params_declared);
            }
            if phase == Phase::SteadyState
                && let Some(a) = &action
                && a.effect() != Effect::ReadOnly
            {
                self.out.push(
                    Diagnostic::new(
                        Code::SteadyStateWrites,
                        At::node(ptr(&at, "action")),
                        format!(
                            "steady-state check `{}` uses `{}`, which changes things; a check runs twice and must only read",
                            s.id, s.action
                        ),
                    )
                    .help(format!(
                        "check with a read: {}",
                        crate::actions::in_words(|a| a.read_only)
                    )),
                );
            }
            let timeout = self
                .duration(s.timeout.as_ref(), &ptr(&at, "timeout"))
                .unwrap_or(default_timeout);
            let retry = self.retry(s.retry.as_ref(), default_retry, &ptr(&at, "retry"));
            self.exit_codes_only_for_shell(s.retry.as_ref(), &s.action, &ptr(&at, "retry"));
            let own_outputs = outputs_of(&s.action).map(|o| (s.action.as_str(), o));

            let upstream_here = acyclic.then_some(templates::Upstream {
                reach: &reach,
                of: i,
                itself: false,
                earlier_from: group.len(),
            });
            // Steady-state checks run twice under other ids (`before.x`, `after.x`), so one
            // cannot name another's outputs.
            let steps_here = (phase != Phase::SteadyState).then_some(&step_outputs);
            let mut scope = Scope {
                place: phase.with_place(),
                params: param_names,
                secrets: Some(secret_names),
                env_secrets,
                steps: steps_here,
                upstream: upstream_here,
                outputs: None,
                before: false,
                run: true,
                ending: phase.ending().is_some(),
                item: s.for_each.is_some(),
                groups: Some(&groups),
            };
            templates::check_value(&self.env, &s.with, &ptr(&at, "with"), &scope, &mut self.out);
            scope.secrets = None;
            if let Some(w) = &s.when {
                scope.place = "`when`";
                templates::check_expression(&self.env, w, &ptr(&at, "when"), &scope, &mut self.out);
            }
            if let Some(a) = &s.assert {
                scope.place = "`assert`";
                scope.outputs = own_outputs;
                scope.before = phase == Phase::SteadyState;
                templates::check_expression(
                    &self.env,
                    a,
                    &ptr(&at, "assert"),
                    &scope,
                    &mut self.out,
                );
            }

            let compensate = s.compensate.as_ref().and_then(|c| {
                let cat = ptr(&at, "compensate");
                if let Some(a) = &action {
                    let why = match a.effect() {
                        Effect::ReadOnly => Some(format!("`{}` changes nothing, so there is nothing to compensate", s.action)),
                        Effect::Irreversible => Some(format!("`{}` cannot be undone; a compensation would only pretend to", s.action)),
                        Effect::Changes => None,
                    };
                    if let Some(why) = why {
                        self.out.push(
                            Diagnostic::new(Code::NothingToCompensate, At::key(&cat), why)
                                .help("remove `compensate`; to react to a failure, add a step with `on_failure` handling instead"),
                        );
                    }
                }
                let caction = self.action(&c.action, &c.with, &cat, connections);
                // The compensation runs after its step, so it may read that step's outputs too.
                let cscope = Scope {
                    place: "`compensate`",
                    params: param_names,
                    secrets: Some(secret_names),
                env_secrets,
                    steps: steps_here,
                    upstream: upstream_here.map(|u| templates::Upstream { itself: true, ..u }),
                    outputs: own_outputs,
                    before: false,
                    run: true,
                    ending: false,
                    item: s.for_each.is_some(),
                    groups: Some(&groups),
                };
                templates::check_value(&self.env, &c.with, &ptr(&cat, "with"), &cscope, &mut self.out);
                let ctimeout = self.duration(c.timeout.as_ref(), &ptr(&cat, "timeout")).unwrap_or(timeout);
                let cretry = self.retry(c.retry.as_ref(), default_retry, &ptr(&cat, "retry"));
                self.exit_codes_only_for_shell(c.retry.as_ref(), &c.action, &ptr(&cat, "retry"));
                Some(ValidCompensation { action: caction?, with: c.with.clone(), timeout: ctimeout, retry: cretry })
            });

            if let Some(action) = action {
                steps.push(ValidStep {
                    id: s.id.clone(),
                    at,
                    action,
                    with: s.with.clone(),
                    needs: needs[i].clone(),
                    description: s.description.clone(),
                    when: s.when.clone(),
                    assert: s.assert.clone(),
                    timeout,
                    retry,
                    on_failure: s.on_failure.unwrap_or_default(),
                    on_skipped_needs: s.on_skipped_needs.unwrap_or_default(),
                    compensate,
                    phase: phase.ending().unwrap_or(StepPhase::Main),
                    for_each: s.for_each.as_ref().and_then(|f| match &f.0 {
                        Value::Array(items) => Some(super::ForEach::Items(items.clone())),
                        Value::String(t) => Some(super::ForEach::Template(t.clone())),
                        // The schema reported it.
                        _ => None,
                    }),
                    max_parallel: s.max_parallel,
                    member: None,
                });
            }
        }

        (steps.len() == group.len()).then_some(steps)
    }

    /// `for_each` is a list, or one `{{ expression }}` of params (its items are known once
    /// the params are: `expand`); `max_parallel` goes with it.
    fn for_each(&mut self, s: &model::Step, at: &str, shared: &Shared<'_>) {
        if s.max_parallel.is_some() && s.for_each.is_none() {
            self.out.push(
                Diagnostic::new(
                    Code::InvalidValue,
                    At::key(ptr(at, "max_parallel")),
                    "`max_parallel` limits the steps a `for_each` makes, and this step has none",
                )
                .help("limit the whole run with `--max-parallel`"),
            );
        }
        let Some(Value::String(t)) = s.for_each.as_ref().map(|f| &f.0) else {
            return;
        };
        let here = ptr(at, "for_each");
        let whole = t.trim();
        if !(whole.starts_with("{{") && whole.ends_with("}}") && whole.matches("{{").count() == 1) {
            self.out.push(
                Diagnostic::new(
                    Code::InvalidValue,
                    At::node(&here),
                    "`for_each` is a list, or one `{{ expression }}` whose value is a list",
                )
                .help("write the items (`for_each: [orders, users]`) or name a list param (`for_each: \"{{ params.databases }}\"`)"),
            );
            return;
        }
        let inner = whole[2..whole.len() - 2].trim();
        let mut others: Vec<String> = templates::expression_roots(&self.env, inner)
            .into_iter()
            .filter(|r| r != "params")
            .collect();
        others.sort();
        if let Some(first) = others.first() {
            self.out.push(
                Diagnostic::new(
                    Code::UnknownName,
                    At::text(&here, first.clone()),
                    format!("`for_each` reads `{first}`, and its items come from the params alone"),
                )
                .help("the items are known before anything runs, so the plan a reviewer reads is the run: use a list param (`type: array`)"),
            );
            return;
        }
        let scope = Scope::bare("`for_each`", shared.params, shared.env_secrets);
        templates::check_value(
            &self.env,
            &Value::String(t.clone()),
            &here,
            &scope,
            &mut self.out,
        );
    }

    /// `on_failure` and `finally`: lists of their own that run once the run ended. Their ids
    /// are unique in the whole runbook (the run log names steps by id); nothing in them is
    /// undone by a rollback or waits for an answer, since nobody may be there to give one.
    fn handlers(&mut self, rb: &Runbook, shared: &Shared<'_>) -> Option<Vec<ValidStep>> {
        let mut earlier = Earlier::new();
        for (i, s) in rb.steps.iter().enumerate() {
            if let Some(o) = outputs_of(&s.action) {
                earlier.entry(s.id.as_str()).or_insert((i, o));
            }
        }
        let mut seen: HashMap<&str, &str> = rb
            .steps
            .iter()
            .map(|s| (s.id.as_str(), "a step of `steps`"))
            .collect();
        let mut all = Vec::new();
        let mut complete = true;
        for (list, base, phase, what) in [
            (
                &rb.on_failure,
                "/on_failure",
                Phase::OnFailure,
                "a step of `on_failure`",
            ),
            (
                &rb.finally,
                "/finally",
                Phase::Finally,
                "a step of `finally`",
            ),
        ] {
            for (i, s) in list.iter().enumerate() {
                let at = format!("{base}/{i}");
                match seen.get(s.id.as_str()) {
                    Some(&other) if other != what => self.out.push(
                        Diagnostic::new(
                            Code::DuplicateStepId,
                            At::node(ptr(&at, "id")),
                            format!("duplicate step id `{}`", s.id),
                        )
                        .label(format!("also the id of {other}"))
                        .help("step ids must be unique within a runbook, `on_failure` and `finally` included"),
                    ),
                    Some(_) => {}
                    None => {
                        seen.insert(&s.id, what);
                    }
                }
                let refused = if s.compensate.is_some() {
                    Some(("compensate", "a step that runs after the rollback is never rolled back: remove `compensate`".to_string()))
                } else if s.action == "approval" {
                    Some((
                        "action",
                        format!(
                            "an approval in {} would wait for someone after the run ended; page them with a step instead",
                            phase.among().trim_start_matches(" of ")
                        ),
                    ))
                } else {
                    None
                };
                if let Some((field, why)) = refused {
                    self.out.push(
                        Diagnostic::new(Code::NotInHandler, At::key(ptr(&at, field)), why)
                            .help("`on_failure` and `finally` run unattended once the run ended, and what they do stays done"),
                    );
                }
            }
            let offset = rb.steps.len() + all.len();
            match self.steps(list, base, phase, shared, &earlier) {
                Some(mut steps) => {
                    for s in &mut steps {
                        for n in &mut s.needs {
                            *n += offset;
                        }
                    }
                    all.extend(steps);
                }
                None => complete = false,
            }
        }
        complete.then_some(all)
    }

    /// Checks `drill`: its targets name connections, each scenario's parts are valid step lists,
    /// and no id of a scenario is also the id of another of its steps or of a runbook step.
    fn drill(
        &mut self,
        d: &model::Drill,
        rb: &Runbook,
        objectives: ValidObjectives,
        shared: &Shared<'_>,
    ) -> Option<ValidDrill> {
        for (i, t) in d.targets.iter().enumerate() {
            if !rb.connections.contains_key(t) {
                self.out.push(
                    Diagnostic::new(
                        Code::UnknownConnection,
                        At::node(format!("/drill/targets/{i}")),
                        format!("drill target `{t}` is not a connection"),
                    )
                    .label("not under `connections`")
                    .help_opt(did_you_mean(t, rb.connections.keys().map(String::as_str))),
                );
            }
        }
        let mut scenarios = indexmap::IndexMap::new();
        let mut complete = true;
        for (name, sc) in &d.scenarios {
            let at = ptr("/drill/scenarios", name);
            if !is_scenario_name(name) {
                self.out.push(
                    Diagnostic::new(
                        Code::InvalidValue,
                        At::key(&at),
                        format!("invalid scenario name `{name}`"),
                    )
                    .help("scenario names are lowercase letters, digits, `-` and `_`, starting with a letter, so they can be typed after --scenario"),
                );
            }
            let own = ValidObjectives {
                rto: sc
                    .objectives
                    .as_ref()
                    .and_then(|o| self.duration(o.rto.as_ref(), &format!("{at}/objectives/rto")))
                    .or(objectives.rto),
                rpo: sc
                    .objectives
                    .as_ref()
                    .and_then(|o| self.duration(o.rpo.as_ref(), &format!("{at}/objectives/rpo")))
                    .or(objectives.rpo),
            };
            let steady_at = ptr(&at, "steady_state");
            let inject_at = ptr(&at, "inject");
            let none = Earlier::new();
            let steady = self.steps(
                &sc.steady_state,
                &steady_at,
                Phase::SteadyState,
                shared,
                &none,
            );
            let inject = self.steps(&sc.inject, &inject_at, Phase::Inject, shared, &none);
            // Every id of the composed run must be unique; steady-state checks become
            // `before.x`/`after.x` there, but one name per thing keeps the report readable.
            let mut seen: HashMap<&str, String> = rb
                .steps
                .iter()
                .map(|s| (s.id.as_str(), "a step of the runbook".to_string()))
                .collect();
            for (part_at, part, list) in [
                (&steady_at, "steady_state", &sc.steady_state),
                (&inject_at, "inject", &sc.inject),
            ] {
                for (i, s) in list.iter().enumerate() {
                    match seen.get(s.id.as_str()) {
                        // Duplicates inside one part were reported by `steps`.
                        Some(other) if !other.starts_with(part) => self.out.push(
                            Diagnostic::new(
                                Code::DuplicateStepId,
                                At::node(format!("{part_at}/{i}/id")),
                                format!("duplicate step id `{}`", s.id),
                            )
                            .label(format!("also the id of {other}"))
                            .help("a scenario's step ids must differ from each other and from the runbook's steps: the report names steps by id"),
                        ),
                        Some(_) => {}
                        None => {
                            seen.insert(&s.id, format!("{part} step `{}` of this scenario", s.id));
                        }
                    }
                }
            }
            match (steady, inject) {
                (Some(steady_state), Some(inject)) => {
                    scenarios.insert(
                        name.clone(),
                        ValidScenario {
                            description: sc.description.clone(),
                            objectives: own,
                            steady_state,
                            inject,
                        },
                    );
                }
                _ => complete = false,
            }
        }
        complete.then(|| ValidDrill {
            targets: d.targets.clone(),
            scenarios,
        })
    }

    /// Types a `with` and checks what its type cannot: combinations, connections.
    fn action(
        &mut self,
        name: &str,
        with: &Value,
        at: &str,
        connections: &indexmap::IndexMap<String, ValidConnection>,
    ) -> Option<Action> {
        let with_at = ptr(at, "with");
        let action = match Action::parse(name, with) {
            Ok(Some(a)) => a,
            Ok(None) => {
                self.unless_schema(
                    ptr(at, "action"),
                    Diagnostic::new(
                        Code::UnknownAction,
                        At::node(ptr(at, "action")),
                        format!("unknown action `{name}`"),
                    )
                    .help(
                        did_you_mean(name, crate::actions::NAMES.iter().copied())
                            .unwrap_or_else(|| "`lifeboat actions` lists them all".into()),
                    ),
                );
                return None;
            }
            Err(e) => {
                self.unless_schema(
                    &with_at,
                    Diagnostic::new(
                        Code::InvalidValue,
                        At::node(format!("{with_at}{}", e.field)),
                        format!("in `with` of `{name}`: {}", e.message),
                    ),
                );
                return None;
            }
        };
        for p in action.check() {
            let pointer = format!("{with_at}{}", p.field);
            let at = if p.field.is_empty() {
                At::key(&pointer)
            } else {
                At::node(&pointer)
            };
            let d = Diagnostic::new(p.code, at, format!("in `with` of `{name}`: {}", p.message));
            self.unless_schema(pointer, d);
        }
        for u in action.connections() {
            if crate::actions::is_template(u.name) {
                continue;
            }
            let pointer = format!("{with_at}{}", u.field);
            let kinds = u
                .kinds
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(" or ");
            match connections.get(u.name) {
                None => self.out.push(
                    Diagnostic::new(
                        Code::UnknownConnection,
                        At::node(&pointer),
                        format!("no connection is named `{}`", u.name),
                    )
                    .label(format!("`{name}` needs a {kinds} connection here"))
                    .help_opt(did_you_mean(u.name, connections.keys().map(String::as_str))),
                ),
                Some(c) if !u.kinds.contains(&c.kind) => self.out.push(
                    Diagnostic::new(
                        Code::WrongConnectionKind,
                        At::node(&pointer),
                        format!(
                            "`{name}` needs a {kinds} connection, but `{}` is a {} connection",
                            u.name, c.kind
                        ),
                    )
                    .help_opt({
                        let fit: Vec<&str> = connections
                            .iter()
                            .filter(|(_, c)| u.kinds.contains(&c.kind))
                            .map(|(n, _)| n.as_str())
                            .collect();
                        (!fit.is_empty())
                            .then(|| format!("{kinds} connections: {}", fit.join(", ")))
                    }),
                ),
                Some(_) => {}
            }
        }
        Some(action)
    }

    /// Reports each cycle once, with its path, at the `needs` entry that closes it.
    fn cycles(&mut self, graph: &DiGraph<usize, usize>, group: &[model::Step], base: &str) -> bool {
        let mut acyclic = true;
        for scc in petgraph::algo::tarjan_scc(graph) {
            let self_loop = scc.len() == 1 && graph.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            acyclic = false;
            let members: HashSet<NodeIndex> = scc.iter().copied().collect();
            // Start at the member that comes first in the file, so the message is stable.
            let start = *scc.iter().min_by_key(|n| graph[**n]).expect("non-empty");
            let path = cycle_path(graph, start, &members);
            let ids: Vec<&str> = path.iter().map(|n| group[graph[*n]].id.as_str()).collect();
            // The edge from the last step back to the first is the closing `needs` entry.
            let last = *path.last().expect("non-empty");
            let edge = graph.find_edge(last, start).expect("cycle edge");
            let (step, entry) = (graph[start], graph[edge]);
            let mut shown = ids.clone();
            shown.push(ids[0]);
            let message = if self_loop {
                format!("step `{}` needs itself", ids[0])
            } else {
                format!(
                    "dependency cycle: {}",
                    shown
                        .iter()
                        .rev()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(" needs ")
                )
            };
            self.out.push(
                Diagnostic::new(
                    Code::DependencyCycle,
                    At::node(format!("{base}/{step}/needs/{entry}")),
                    message,
                )
                .label("this `needs` closes the cycle")
                .help("a step can only need steps that do not, directly or indirectly, need it"),
            );
        }
        acyclic
    }
}

/// A cycle through `start` inside one strongly connected component, as a list of nodes along
/// dependency edges (each node is needed by the next).
fn cycle_path(
    graph: &DiGraph<usize, usize>,
    start: NodeIndex,
    members: &HashSet<NodeIndex>,
) -> Vec<NodeIndex> {
    // Breadth-first from start to any member with an edge back to start: the shortest cycle.
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut seen = HashSet::from([start]);
    while let Some(n) = queue.pop_front() {
        if graph.contains_edge(n, start) {
            let mut path = vec![n];
            let mut cur = n;
            while cur != start {
                cur = prev[&cur];
                path.push(cur);
            }
            path.reverse();
            return path;
        }
        let mut next: Vec<NodeIndex> = graph.neighbors(n).filter(|m| members.contains(m)).collect();
        next.sort_by_key(|m| graph[*m]);
        for m in next {
            if seen.insert(m) {
                prev.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    vec![start]
}

/// A scenario name: typed after `--scenario`, shown in reports and metrics labels.
fn is_scenario_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Matches [`model::NAME_PATTERN`].
fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
