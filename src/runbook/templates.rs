//! Templates (`{{ ... }}` in `with` and connections) and expressions (`when`, `assert`): one
//! minijinja environment for validation, planning and running, and the static checks of the names
//! they use.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::actions::{Output, is_template};
use crate::diagnostics::{At, Code, Diagnostic, did_you_mean, ptr};

/// Fields of `run` that templates may read.
pub const RUN_FIELDS: &[&str] = &[
    "id",
    "started_at",
    "operator",
    "attempt_key",
    "runbook",
    "version",
];

/// The environment every template is compiled and rendered in. Undefined names are errors, never
/// empty strings: a restore that silently targets "" is the failure this tool exists to prevent.
/// Fuel bounds the work a template can do (no runaway loops in a review bot).
pub fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(100_000));
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// Reachability along `needs`, answered per question: a bitset per step would be quadratic in
/// memory, and nearly every reference is to a direct need, which is answered at once.
pub struct Reach<'a> {
    needs: &'a [Vec<usize>],
}

impl<'a> Reach<'a> {
    pub fn new(needs: &'a [Vec<usize>]) -> Reach<'a> {
        Reach { needs }
    }

    /// Whether `to` is needed by `from`, directly or through other steps. The graph must be acyclic.
    pub fn needs(&self, from: usize, to: usize) -> bool {
        if self.needs[from].contains(&to) {
            return true;
        }
        let mut seen = HashSet::new();
        let mut stack: Vec<usize> = self.needs[from].clone();
        while let Some(n) = stack.pop() {
            if n == to {
                return true;
            }
            if seen.insert(n) {
                stack.extend(self.needs[n].iter().copied().filter(|m| !seen.contains(m)));
            }
        }
        false
    }
}

/// The steps upstream of step `of` (and `of` itself when `itself`, for compensations).
#[derive(Clone, Copy)]
pub struct Upstream<'a> {
    pub reach: &'a Reach<'a>,
    pub of: usize,
    pub itself: bool,
}

impl Upstream<'_> {
    pub fn contains(&self, step: usize) -> bool {
        (self.itself && step == self.of) || self.reach.needs(self.of, step)
    }
}

/// What a template at some place may refer to.
pub struct Scope<'a> {
    /// Where the template is, for messages: "`when`", "`with`", "a connection".
    pub place: &'a str,
    pub params: &'a [&'a str],
    pub secrets: Option<&'a [&'a str]>,
    /// Step id -> (index, outputs of its action). `None`: `steps` is not available here.
    pub steps: Option<&'a HashMap<&'a str, (usize, &'static [Output])>>,
    /// Which steps certainly finish before this template is rendered. `None`: unknown (a cycle).
    pub upstream: Option<Upstream<'a>>,
    /// The current step's own outputs, where `outputs` may be used (`assert`, `compensate`).
    pub outputs: Option<(&'a str, &'static [Output])>,
    pub run: bool,
}

/// Checks every template string inside `value` (at `pointer`).
pub fn check_value(
    env: &minijinja::Environment<'_>,
    value: &Value,
    pointer: &str,
    scope: &Scope<'_>,
    out: &mut Vec<Diagnostic>,
) {
    match value {
        Value::String(s) if is_template(s) => match env.template_from_str(s) {
            Ok(t) => check_names(t.undeclared_variables(true), pointer, scope, out),
            Err(e) => out.push(syntax_error(&e, pointer, "template")),
        },
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_value(env, v, &ptr(pointer, i), scope, out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                check_value(env, v, &ptr(pointer, k), scope, out);
            }
        }
        _ => {}
    }
}

/// Checks a bare expression (`when`, `assert`).
pub fn check_expression(
    env: &minijinja::Environment<'_>,
    expr: &str,
    pointer: &str,
    scope: &Scope<'_>,
    out: &mut Vec<Diagnostic>,
) {
    if expr.trim_start().starts_with("{{") {
        out.push(
            Diagnostic::new(
                Code::TemplateSyntax,
                At::node(pointer),
                format!("{} is an expression, not a template", scope.place),
            )
            .help("drop the `{{ }}`: write `params.region == 'eu-west-1'`"),
        );
        return;
    }
    match env.compile_expression(expr) {
        Ok(e) => check_names(e.undeclared_variables(true), pointer, scope, out),
        Err(e) => out.push(syntax_error(&e, pointer, "expression")),
    }
}

fn syntax_error(e: &minijinja::Error, pointer: &str, what: &str) -> Diagnostic {
    let detail = e
        .detail()
        .map_or_else(|| e.kind().to_string(), String::from);
    Diagnostic::new(
        Code::TemplateSyntax,
        At::node(pointer),
        format!("{what} does not parse: {detail}"),
    )
}

fn check_names(
    names: HashSet<String>,
    pointer: &str,
    scope: &Scope<'_>,
    out: &mut Vec<Diagnostic>,
) {
    let mut names: Vec<String> = names.into_iter().collect();
    names.sort();
    for name in names {
        if let Some(d) = check_name(&name, pointer, scope) {
            out.push(d);
        }
    }
}

/// Globals minijinja provides that templates may call.
const GLOBALS: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "debug",
    "loop",
    "self",
    "true",
    "false",
    "none",
];

fn check_name(name: &str, pointer: &str, scope: &Scope<'_>) -> Option<Diagnostic> {
    let segs: Vec<&str> = name.split('.').collect();
    let root = segs[0];
    let at = |upto: usize| At::text(pointer, segs[..=upto.min(segs.len() - 1)].join("."));
    let place = scope.place;
    match root {
        "params" => {
            let p = *segs.get(1)?;
            if scope.params.contains(&p) {
                return None;
            }
            Some(
                Diagnostic::new(
                    Code::UnknownName,
                    at(1),
                    format!("unknown param `{p}` in {place}"),
                )
                .label("not declared under `params`")
                .help_opt(did_you_mean(p, scope.params.iter().copied())),
            )
        }
        "secrets" => {
            let Some(secrets) = scope.secrets else {
                return Some(
                    Diagnostic::new(Code::UnknownName, at(0), format!("secrets cannot be used in {place}"))
                        .help("a decision that depends on a secret would reveal it in the plan and the run log"),
                );
            };
            let s = *segs.get(1)?;
            if secrets.contains(&s) {
                return None;
            }
            Some(
                Diagnostic::new(
                    Code::UnknownName,
                    at(1),
                    format!("unknown secret `{s}` in {place}"),
                )
                .label("not declared under `secrets`")
                .help_opt(did_you_mean(s, secrets.iter().copied())),
            )
        }
        "env" => None,
        "run" if scope.run => {
            let f = *segs.get(1)?;
            if RUN_FIELDS.contains(&f) {
                return None;
            }
            Some(
                Diagnostic::new(
                    Code::UnknownName,
                    at(1),
                    format!("`run` has no field `{f}`"),
                )
                .help(format!("`run` has: {}", RUN_FIELDS.join(", "))),
            )
        }
        "steps" if scope.steps.is_some() => {
            let steps = scope.steps?;
            let Some(&id) = segs.get(1) else {
                return Some(Diagnostic::new(
                    Code::UnknownName,
                    at(0),
                    "use `steps.<id>.outputs.<name>`",
                ));
            };
            let Some(&(index, outputs)) = steps.get(id) else {
                return Some(
                    Diagnostic::new(
                        Code::UnknownName,
                        at(1),
                        format!("no step has the id `{id}`"),
                    )
                    .help_opt(did_you_mean(id, steps.keys().copied())),
                );
            };
            if let Some(upstream) = &scope.upstream
                && !upstream.contains(index)
            {
                return Some(
                    Diagnostic::new(
                        Code::NotUpstream,
                        at(1),
                        format!(
                            "{place} reads the outputs of step `{id}`, which does not run before it"
                        ),
                    )
                    .label("not in this step's `needs`, directly or through other steps")
                    .help(format!("add `{id}` to this step's `needs`")),
                );
            }
            match segs.get(2) {
                Some(&"outputs") => {}
                _ => {
                    return Some(
                        Diagnostic::new(
                            Code::UnknownName,
                            at(2),
                            format!("use `steps.{id}.outputs.<name>`"),
                        )
                        .help(format!("outputs of `{id}`: {}", names(outputs))),
                    );
                }
            }
            let o = *segs.get(3)?;
            if outputs.iter().any(|x| x.name == o) {
                return None;
            }
            Some(
                Diagnostic::new(
                    Code::UnknownOutput,
                    at(3),
                    format!("step `{id}` has no output `{o}`"),
                )
                .help(format!("its outputs are: {}", names(outputs))),
            )
        }
        "outputs" if scope.outputs.is_some() => {
            let (action, outputs) = scope.outputs?;
            let o = *segs.get(1)?;
            if outputs.iter().any(|x| x.name == o) {
                return None;
            }
            Some(
                Diagnostic::new(
                    Code::UnknownOutput,
                    at(1),
                    format!("`{action}` has no output `{o}`"),
                )
                .help(format!("its outputs are: {}", names(outputs))),
            )
        }
        _ if GLOBALS.contains(&root) => None,
        _ => {
            let mut roots = vec!["params", "env"];
            if scope.secrets.is_some() {
                roots.push("secrets");
            }
            if scope.steps.is_some() {
                roots.push("steps");
            }
            if scope.run {
                roots.push("run");
            }
            if scope.outputs.is_some() {
                roots.push("outputs");
            }
            let help = did_you_mean(root, roots.iter().copied())
                .unwrap_or_else(|| format!("{place} can use: {}", roots.join(", ")));
            Some(
                Diagnostic::new(
                    Code::UnknownName,
                    at(0),
                    format!("unknown name `{root}` in {place}"),
                )
                .help(help),
            )
        }
    }
}

fn names(outputs: &[Output]) -> String {
    outputs
        .iter()
        .map(|o| o.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders every template string inside `value`. A string that is one whole `{{ expression }}`
/// keeps the expression's type (so `replicas: "{{ params.n }}"` becomes a number), and `shape` may
/// turn objects the expression returns into JSON (plan placeholders become their text).
pub fn render_value(
    env: &minijinja::Environment<'_>,
    value: &Value,
    pointer: &str,
    ctx: &minijinja::Value,
    shape: &dyn Fn(&minijinja::Value) -> Option<Value>,
) -> Result<Value, Diagnostic> {
    let fail = |e: minijinja::Error| {
        let detail = e
            .detail()
            .map_or_else(|| e.kind().to_string(), String::from);
        Diagnostic::new(
            Code::TemplateRender,
            At::node(pointer),
            format!("template fails to render: {detail}"),
        )
    };
    Ok(match value {
        Value::String(s) if is_template(s) => {
            if let Some(expr) = whole_expression(s) {
                let v = env
                    .compile_expression(expr)
                    .and_then(|e| e.eval(ctx))
                    .map_err(fail)?;
                match shape(&v) {
                    Some(j) => j,
                    None => serde_json::to_value(&v).map_err(|e| {
                        Diagnostic::new(
                            Code::TemplateRender,
                            At::node(pointer),
                            format!("template result is not data: {e}"),
                        )
                    })?,
                }
            } else {
                Value::String(env.render_str(s, ctx).map_err(fail)?)
            }
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render_value(env, v, &ptr(pointer, i), ctx, shape))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        render_value(env, v, &ptr(pointer, k), ctx, shape)?,
                    ))
                })
                .collect::<Result<_, Diagnostic>>()?,
        ),
        other => other.clone(),
    })
}

/// `{{ expr }}` filling the whole string, with no other template syntax: returns `expr`.
fn whole_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%"))
        .then_some(inner.trim())
}

/// The names an expression reads, by their first segment.
pub fn expression_roots(env: &minijinja::Environment<'_>, expr: &str) -> HashSet<String> {
    env.compile_expression(expr)
        .map(|e| e.undeclared_variables(false))
        .unwrap_or_default()
}
