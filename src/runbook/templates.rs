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

/// Fields of `run` that only the steps of `on_failure` and `finally` may read: how the run ended.
pub const ENDING_FIELDS: &[&str] = &["status", "failed_step", "error"];

/// The environment every template is compiled and rendered in. Undefined names are errors, never
/// empty strings: a restore that silently targets "" is the failure this tool exists to prevent.
/// Fuel bounds the work a template can do (no runaway loops in a review bot).
pub fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(100_000));
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("shell_quote", super::quoting::shell_quote);
    env.add_filter("sql_literal", super::quoting::sql_literal);
    env.add_filter("sql_ident", super::quoting::sql_ident);
    env
}

/// `{{ x | b64encode }}`: standard base64 of the value's UTF-8 text (basic-auth headers).
fn b64encode(value: String) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(value)
}

fn b64decode(value: String) -> Result<String, minijinja::Error> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
        })?;
    String::from_utf8(bytes).map_err(|_| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            "decoded bytes are not UTF-8",
        )
    })
}

/// The names a template string reads, by their first segment (`secrets`, `steps`, ...).
pub fn template_roots(env: &minijinja::Environment<'_>, template: &str) -> HashSet<String> {
    match whole_expression(template) {
        Some(expr) => expression_roots(env, expr),
        None => env
            .template_from_str(template)
            .map(|t| variables(&t, false))
            .unwrap_or_default(),
    }
}

/// The variables a template reads from its context: with `nested`, as dotted paths of constant
/// attributes (`steps.a.outputs.key`). minijinja's `undeclared_variables` misses the value of a
/// slice (`x[1:3]` reads `x`), so the compiled instructions' lookups are added to what it finds.
fn variables(t: &minijinja::Template<'_, '_>, nested: bool) -> HashSet<String> {
    use minijinja::machinery::Instruction as I;
    let mut names = t.undeclared_variables(nested);
    let ins = &minijinja::machinery::get_compiled_template(t).instructions;
    let all = || (0..).map_while(|i| ins.get(i).map(|now| (i, now)));
    // Names the template binds itself (a loop variable, a `set`, a macro and its arguments).
    let bound: HashSet<&str> = all()
        .filter_map(|(_, now)| match now {
            I::StoreLocal(name) | I::BuildMacro(name, ..) => Some(*name),
            _ => None,
        })
        .collect();
    for (i, now) in all() {
        let I::Lookup(name) = now else { continue };
        if bound.contains(name) {
            continue;
        }
        let mut path = name.to_string();
        let mut next = i + 1;
        while let (true, Some(I::GetAttr(attr))) = (nested, ins.get(next)) {
            path.push('.');
            path.push_str(attr);
            next += 1;
        }
        names.insert(path);
    }
    names
}

/// Works on an expression as a template of itself, for [`variables`] and its instructions.
fn as_template<R>(
    env: &minijinja::Environment<'_>,
    expr: &str,
    f: impl FnOnce(&minijinja::Template<'_, '_>) -> R,
) -> Option<R> {
    let source = format!("{{{{ ({expr}) }}}}");
    env.template_from_str(&source).ok().map(|t| f(&t))
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
    /// Indices from here on are steps of an earlier list (the runbook's `steps`, seen from
    /// `finally`), all settled before this list starts.
    pub earlier_from: usize,
}

impl Upstream<'_> {
    pub fn contains(&self, step: usize) -> bool {
        step >= self.earlier_from
            || (self.itself && step == self.of)
            || self.reach.needs(self.of, step)
    }
}

/// What a template at some place may refer to.
pub struct Scope<'a> {
    /// Where the template is, for messages: "`when`", "`with`", "a connection".
    pub place: &'a str,
    pub params: &'a [&'a str],
    pub secrets: Option<&'a [&'a str]>,
    /// (environment variable, secret): the variables `env:` secrets are read from, which a
    /// template must read as the secret, so that what it makes of the value is masked.
    pub env_secrets: &'a [(&'a str, &'a str)],
    /// Step id -> (index, outputs of its action). `None`: `steps` is not available here.
    pub steps: Option<&'a HashMap<&'a str, (usize, &'static [Output])>>,
    /// Which steps certainly finish before this template is rendered. `None`: unknown (a cycle).
    pub upstream: Option<Upstream<'a>>,
    /// The current step's own outputs, where `outputs` may be used (`assert`, `compensate`).
    pub outputs: Option<(&'a str, &'static [Output])>,
    /// A steady-state check's `assert`: `before.outputs` is what the same check returned before
    /// the fault.
    pub before: bool,
    pub run: bool,
    /// A step of `on_failure` or `finally`: `run.status`, `run.failed_step` and `run.error`.
    pub ending: bool,
    /// A step with `for_each`: `item` is the item of each step it makes.
    pub item: bool,
    /// The ids of `for_each` steps: `steps.<group>.outputs` is a list of their outputs.
    pub groups: Option<&'a HashSet<&'a str>>,
}

impl<'a> Scope<'a> {
    /// A place that may read `params` (and `env`) and nothing else; add what else it may.
    pub fn bare(
        place: &'a str,
        params: &'a [&'a str],
        env_secrets: &'a [(&'a str, &'a str)],
    ) -> Scope<'a> {
        Scope {
            place,
            params,
            secrets: None,
            env_secrets,
            steps: None,
            upstream: None,
            outputs: None,
            before: false,
            run: false,
            ending: false,
            item: false,
            groups: None,
        }
    }
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
        Value::String(s) if is_template(s) => match simple_names(s) {
            Some(names) => check_names(names, pointer, scope, out),
            None => match env.template_from_str(s) {
                Ok(t) => {
                    check_names(variables(&t, true), pointer, scope, out);
                    out.extend(never_renders(env, &t, pointer));
                }
                Err(e) => out.push(syntax_error(&e, pointer, "template")),
            },
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

/// A template made only of literal text and `{{ a.b.c }}` holes — nearly every template in a
/// runbook — split into (literal, name) pieces and the literal tail. minijinja would parse such a
/// template twice to check it (to compile it, then to list its names) and again to render it; these
/// pieces serve both without it. `None` for anything else (filters, operators, blocks, comments,
/// whitespace control, keywords, a trailing newline minijinja would trim), which minijinja handles.
fn simple_holes(s: &str) -> Option<(Vec<(&str, &str)>, &str)> {
    if s.contains("{%") || s.contains("{#") || s.ends_with('\n') {
        return None;
    }
    let mut holes = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let j = after.find("}}")?;
        let inner = after[..j].trim();
        if !is_dotted_name(inner) {
            return None;
        }
        holes.push((&rest[..i], inner));
        rest = &after[j + 2..];
    }
    Some((holes, rest))
}

fn simple_names(s: &str) -> Option<HashSet<String>> {
    let (holes, _) = simple_holes(s)?;
    Some(
        holes
            .into_iter()
            .map(|(_, name)| name.to_string())
            .collect(),
    )
}

/// `a.b.c` looked up in `ctx` as minijinja does; `None` when a part is undefined, so that the full
/// renderer runs and reports it.
fn lookup(ctx: &minijinja::Value, path: &str) -> Option<minijinja::Value> {
    let mut v = ctx.clone();
    for seg in path.split('.') {
        v = v.get_attr(seg).ok()?;
        if v.is_undefined() {
            return None;
        }
    }
    Some(v)
}

/// Renders a simple template (see [`simple_holes`]) without compiling it.
fn render_simple(s: &str, ctx: &minijinja::Value) -> Option<String> {
    use std::fmt::Write;
    let (holes, tail) = simple_holes(s)?;
    let mut out = String::with_capacity(s.len());
    for (literal, name) in holes {
        out.push_str(literal);
        write!(out, "{}", lookup(ctx, name)?).ok()?;
    }
    out.push_str(tail);
    Some(out)
}

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None",
];

fn is_dotted_name(s: &str) -> bool {
    s.split('.').all(|part| {
        let mut chars = part.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !KEYWORDS.contains(&part)
    })
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
        Ok(e) => {
            let checked = as_template(env, expr, |t| {
                check_names(variables(t, true), pointer, scope, out);
                out.extend(never_renders(env, t, pointer));
            });
            if checked.is_none() {
                check_names(e.undeclared_variables(true), pointer, scope, out);
            }
        }
        Err(e) => out.push(syntax_error(&e, pointer, "expression")),
    }
}

/// What makes a template fail whatever the values: a filter, test or function that does not
/// exist, a statement that needs other templates (lifeboat has none to load: `include`,
/// `import`, `extends`), and division by a literal zero. Found in the compiled instructions,
/// so `validate` refuses what `plan` and `run` could never render.
fn never_renders(
    env: &minijinja::Environment<'_>,
    t: &minijinja::Template<'_, '_>,
    pointer: &str,
) -> Option<Diagnostic> {
    use minijinja::machinery::Instruction as I;
    let compiled = minijinja::machinery::get_compiled_template(t);
    let ins = &compiled.instructions;
    // Names the template binds itself (a macro, a `set`), which it may call.
    let mut locals: Vec<&str> = LOCAL_CALLABLES.to_vec();
    let mut i = 0;
    while let Some(now) = ins.get(i) {
        if let I::StoreLocal(name) | I::BuildMacro(name, ..) = now {
            locals.push(name);
        }
        i += 1;
    }
    let mut prev: Option<&I<'_>> = None;
    let mut i = 0;
    while let Some(now) = ins.get(i) {
        let problem = match now {
            I::ApplyFilter(name, ..) if !exists(env, Probe::Filter, name) => {
                Some((format!("unknown filter `{name}`"), Some(name.to_string())))
            }
            I::PerformTest(name, ..) if !exists(env, Probe::Test, name) => {
                Some((format!("unknown test `{name}`"), Some(name.to_string())))
            }
            I::CallFunction(name, _)
                if !env.globals().any(|(g, _)| g == *name) && !locals.contains(name) =>
            {
                Some((format!("unknown function `{name}`"), Some(name.to_string())))
            }
            I::Include(_) | I::LoadBlocks | I::ExportLocals | I::CallBlock(_) | I::FastSuper => {
                Some((
                    "`include`, `import`, `extends` and blocks need other templates, and a runbook has none".into(),
                    None,
                ))
            }
            I::Div | I::IntDiv | I::Rem
                if matches!(prev, Some(I::LoadConst(v)) if v.is_number() && f64::try_from(v.clone()).is_ok_and(|f| f == 0.0)) =>
            {
                Some(("division by zero".into(), None))
            }
            _ => None,
        };
        if let Some((message, needle)) = problem {
            let at = match needle {
                Some(n) => At::text(pointer, n),
                None => At::node(pointer),
            };
            return Some(
                Diagnostic::new(Code::TemplateNeverRenders, at, format!("this template can never render: {message}"))
                    .help("`plan` and `run` would fail on it whatever the params; see `lifeboat explain LB0126`"),
            );
        }
        prev = Some(now);
        i += 1;
    }
    None
}

/// Names a template may call that are neither globals nor its own: set by minijinja in a loop or
/// a call block.
const LOCAL_CALLABLES: &[&str] = &["caller", "loop", "super", "varargs", "kwargs"];

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Probe {
    Filter,
    Test,
}

/// Whether the environment has a filter or test by this name, asked of minijinja itself (its
/// registry is private): an unknown one fails with its own error kind. Answers are kept.
fn exists(env: &minijinja::Environment<'_>, probe: Probe, name: &str) -> bool {
    use std::sync::{Mutex, OnceLock};
    static KNOWN: OnceLock<Mutex<HashMap<(Probe, String), bool>>> = OnceLock::new();
    let known = KNOWN.get_or_init(Default::default);
    if let Some(&k) = known
        .lock()
        .expect("probe lock")
        .get(&(probe, name.to_string()))
    {
        return k;
    }
    let (template, unknown) = match probe {
        Probe::Filter => (
            format!("{{{{ none | {name} }}}}"),
            minijinja::ErrorKind::UnknownFilter,
        ),
        Probe::Test => (
            format!("{{{{ none is {name} }}}}"),
            minijinja::ErrorKind::UnknownTest,
        ),
    };
    let there = match env.render_str(&template, ()) {
        Ok(_) => true,
        Err(e) => e.kind() != unknown,
    };
    known
        .lock()
        .expect("probe lock")
        .insert((probe, name.to_string()), there);
    there
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
        "env" => {
            let var = *segs.get(1)?;
            let (_, secret) = scope.env_secrets.iter().find(|(v, _)| *v == var)?;
            Some(
                Diagnostic::new(
                    Code::SecretByOtherName,
                    at(1),
                    format!("`env.{var}` is secret `{secret}`: read it as `secrets.{secret}`"),
                )
                .label(format!("secret `{secret}` is read from this variable"))
                .help(format!(
                    "through `secrets.{secret}` the value, and whatever a template makes of it, stays out of the run log; through `env` it would not be masked"
                )),
            )
        }
        "run" if scope.run => {
            let f = *segs.get(1)?;
            if RUN_FIELDS.contains(&f) || (scope.ending && ENDING_FIELDS.contains(&f)) {
                return None;
            }
            if ENDING_FIELDS.contains(&f) {
                return Some(
                    Diagnostic::new(
                        Code::UnknownName,
                        at(1),
                        format!("`run.{f}` is known only once the run ended: in the steps of `on_failure` and `finally`"),
                    )
                    .help("a step of `steps` runs while the run is still running; to follow a failed step, read `steps.<id>.status` after `on_failure: continue`"),
                );
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
                        match segs.get(2) {
                            Some(&"status") | Some(&"error") => format!(
                                "{place} reads how step `{id}` settled, and it does not run before it"
                            ),
                            _ => format!(
                                "{place} reads the outputs of step `{id}`, which does not run before it"
                            ),
                        },
                    )
                    .label("not in this step's `needs`, directly or through other steps")
                    .help(format!("add `{id}` to this step's `needs`")),
                );
            }
            match segs.get(2) {
                // A group's outputs are a list, one entry per step it made.
                Some(&"outputs") if scope.groups.is_some_and(|g| g.contains(id)) => return None,
                Some(&"outputs") => {}
                // How it settled (`succeeded`, `failed` with `on_failure: continue`, `skipped`)
                // and the error it failed with: a fallback path reads them.
                Some(&"status") | Some(&"error") => return None,
                _ => {
                    return Some(
                        Diagnostic::new(
                            Code::UnknownName,
                            at(2),
                            format!(
                                "use `steps.{id}.outputs.<name>`, `steps.{id}.status` or `steps.{id}.error`"
                            ),
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
        "before" if scope.before => {
            let (action, outputs) = scope.outputs?;
            if segs.get(1) != Some(&"outputs") {
                return Some(
                    Diagnostic::new(
                        Code::UnknownName,
                        at(1),
                        "use `before.outputs.<name>`: what this check returned before the fault",
                    )
                    .help(format!("its outputs are: {}", names(outputs))),
                );
            }
            let o = *segs.get(2)?;
            if outputs.iter().any(|x| x.name == o) {
                return None;
            }
            Some(
                Diagnostic::new(
                    Code::UnknownOutput,
                    at(2),
                    format!("`{action}` has no output `{o}`"),
                )
                .help(format!("its outputs are: {}", names(outputs))),
            )
        }
        "item" if scope.item => None,
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
            if scope.item {
                roots.push("item");
            }
            if scope.outputs.is_some() {
                roots.push("outputs");
            }
            if scope.before {
                roots.push("before");
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

/// An infinite or NaN number anywhere in a template's value: JSON would turn it into null.
fn non_finite(v: &minijinja::Value) -> Option<String> {
    use minijinja::value::ValueKind;
    match v.kind() {
        ValueKind::Number => f64::try_from(v.clone())
            .ok()
            .filter(|f| !f.is_finite())
            .map(|f| f.to_string()),
        ValueKind::Seq | ValueKind::Map => v.try_iter().ok()?.find_map(|item| {
            non_finite(&item).or_else(|| non_finite(&v.get_item(&item).unwrap_or_default()))
        }),
        _ => None,
    }
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
    render_each(env, value, pointer, ctx, shape, false)
}

/// What a plan renders: as [`render_value`], except that a template which fails while it reads a
/// value only a run has (a step's outputs, `env`, a secret, `run`) is shown as what it is,
/// `⟨computed at run time: {{ … }}⟩`: it cannot be worked out before the run, which is not an
/// error. (What fails whatever the values, validation has already refused.)
pub fn render_for_plan(
    env: &minijinja::Environment<'_>,
    value: &Value,
    pointer: &str,
    ctx: &minijinja::Value,
    shape: &dyn Fn(&minijinja::Value) -> Option<Value>,
) -> Result<Value, Diagnostic> {
    render_each(env, value, pointer, ctx, shape, true)
}

/// The names whose values only a run has.
const RUN_TIME: &[&str] = &["steps", "outputs", "env", "secrets", "run"];

fn render_each(
    env: &minijinja::Environment<'_>,
    value: &Value,
    pointer: &str,
    ctx: &minijinja::Value,
    shape: &dyn Fn(&minijinja::Value) -> Option<Value>,
    defer: bool,
) -> Result<Value, Diagnostic> {
    if let Value::String(s) = value
        && is_template(s)
    {
        return match render_one(s, pointer, ctx, shape) {
            Err(_)
                if defer
                    && template_roots(env, s)
                        .iter()
                        .any(|r| RUN_TIME.contains(&r.as_str())) =>
            {
                Ok(Value::String(format!(
                    "⟨computed at run time: {}⟩",
                    s.trim()
                )))
            }
            other => other,
        };
    }
    Ok(match value {
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render_each(env, v, &ptr(pointer, i), ctx, shape, defer))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        render_each(env, v, &ptr(pointer, k), ctx, shape, defer)?,
                    ))
                })
                .collect::<Result<_, Diagnostic>>()?,
        ),
        other => other.clone(),
    })
}

/// What one template may allocate while it renders, in all: far beyond any real runbook's (a
/// megabyte of a step's output, encoded), far below what would hurt the machine.
pub const RENDER_BUDGET: usize = 64 << 20;

/// Renders with minijinja's fuel bounding the steps and [`crate::budget`] the bytes, on a
/// thread of its own. Only templates beyond `{{ a.b }}` holes come here: those cannot build
/// more than their inputs.
fn within_budget<T: Send + 'static>(
    work: impl FnOnce(&minijinja::Environment<'static>) -> Result<T, minijinja::Error> + Send + 'static,
) -> Result<T, minijinja::Error> {
    static ENV: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    let env = ENV.get_or_init(environment);
    crate::budget::bounded(RENDER_BUDGET, move || work(env)).unwrap_or_else(|over| {
        let why = if over.tried {
            format!(
                "it would allocate more than {} MiB, a template's budget",
                over.budget >> 20
            )
        } else {
            format!(
                "this process stopped {} templates at their budget already and renders no more",
                crate::budget::MAX_STOPPED
            )
        };
        Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            why,
        ))
    })
}

/// Renders one template string.
fn render_one(
    s: &str,
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
    Ok({
        if let Some(expr) = whole_expression(s) {
            let simple = is_dotted_name(expr).then(|| lookup(ctx, expr)).flatten();
            let v = match simple {
                Some(v) => v,
                None => {
                    let (expr, ctx) = (expr.to_string(), ctx.clone());
                    within_budget(move |env| env.compile_expression(&expr)?.eval(&ctx))
                        .map_err(fail)?
                }
            };
            // Strict mode fails on printing an undefined value, not on evaluating one: a whole
            // value would otherwise turn into null without a word.
            if v.is_undefined() {
                return Err(Diagnostic::new(
                    Code::TemplateRender,
                    At::node(pointer),
                    format!("template fails to render: `{expr}` is undefined"),
                ));
            }
            if let Some(n) = non_finite(&v) {
                return Err(Diagnostic::new(
                    Code::TemplateRender,
                    At::node(pointer),
                    format!("`{expr}` yields {n}, a number JSON cannot hold"),
                ));
            }
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
        } else if let Some(text) = render_simple(s, ctx) {
            Value::String(text)
        } else {
            let (s, ctx) = (s.to_string(), ctx.clone());
            Value::String(within_budget(move |env| env.render_str(&s, &ctx)).map_err(fail)?)
        }
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
    as_template(env, expr, |t| variables(t, false)).unwrap_or_else(|| {
        env.compile_expression(expr)
            .map(|e| e.undeclared_variables(false))
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// minijinja's own list misses the value of a slice; a value read is a value read however
    /// it is then cut.
    #[test]
    fn every_variable_is_found_however_it_is_read() {
        let env = environment();
        for (expr, want) in [
            ("x[1:3]", "x"),
            ("env['A' ~ 'B'][3:15]", "env"),
            ("steps.a.outputs.key[:2] == 'ab'", "steps"),
            ("(secrets.pw | upper)[::2]", "secrets"),
            ("[params.a][0][1:]", "params"),
        ] {
            let roots = expression_roots(&env, expr);
            assert!(roots.contains(want), "{expr}: {roots:?}");
            let roots = template_roots(&env, &format!("a{{{{ {expr} }}}}b"));
            assert!(roots.contains(want), "{expr} in text: {roots:?}");
        }
        // What the template binds itself is not read from the run.
        let t = env
            .template_from_str("{% for x in params.xs %}{{ x[1:] }}{% endfor %}")
            .unwrap();
        assert_eq!(
            variables(&t, true),
            HashSet::from(["params.xs".to_string()])
        );
    }

    /// The fast path must find exactly what minijinja finds, and step aside for everything else.
    #[test]
    fn simple_names_agree_with_minijinja() {
        let env = environment();
        for t in [
            "{{ params.database }}",
            "postgres://app@db/{{ params.db }}?x={{ steps.a.outputs.key }}",
            "{{steps.a.outputs.key}}{{ run.id }}",
            "{{ secrets.pg }}",
            "}} {{ env.HOME }}",
        ] {
            let fast = simple_names(t).unwrap_or_else(|| panic!("{t} should take the fast path"));
            let full = env.template_from_str(t).unwrap().undeclared_variables(true);
            assert_eq!(fast, full, "{t}");
        }
        for t in [
            "{{ params.x | upper }}",
            "{{ a + b }}",
            "{{- params.x -}}",
            "{% if x %}y{% endif %}",
            "{{ not }}",
            "{{ params.x ",
            "{{ a[0] }}",
            "{{ true }}",
            "{# c #}{{ a }}",
            "{{ a }}\n",
        ] {
            assert!(simple_names(t).is_none(), "{t} must go to minijinja");
        }
    }

    /// The render fast path must produce what minijinja produces, for every kind of value.
    #[test]
    fn simple_render_agrees_with_minijinja() {
        let env = environment();
        let ctx = minijinja::context! {
            params => minijinja::context! {
                s => "orders", n => 42, f => 1.5, t => true, nothing => (), list => vec![1, 2], map => minijinja::context! { a => 1 },
                quote => "it's <b>&\"", unicode => "żółw",
            },
        };
        let whole =
            |t: &str| render_value(&env, &Value::String(t.into()), "", &ctx, &|_| None).unwrap();
        for name in [
            "s", "n", "f", "t", "nothing", "list", "map", "quote", "unicode",
        ] {
            let t = format!("x {{{{ params.{name} }}}} y {{{{params.{name}}}}}");
            let fast = render_simple(&t, &ctx).unwrap();
            let full = env.render_str(&t, &ctx).unwrap();
            assert_eq!(fast, full, "{t}");
            let w = format!("{{{{ params.{name} }}}}");
            let full = env
                .compile_expression(&format!("params.{name}"))
                .unwrap()
                .eval(&ctx)
                .unwrap();
            assert_eq!(whole(&w), serde_json::to_value(&full).unwrap(), "{w}");
        }
        // Undefined names leave the fast path, so the strict renderer reports them.
        assert!(render_simple("{{ params.missing }}", &ctx).is_none());
        assert!(
            render_value(
                &env,
                &Value::String("a {{ params.missing }}".into()),
                "/x",
                &ctx,
                &|_| None
            )
            .is_err()
        );
        assert!(
            render_value(
                &env,
                &Value::String("{{ params.missing }}".into()),
                "/x",
                &ctx,
                &|_| None
            )
            .is_err()
        );
    }
}
