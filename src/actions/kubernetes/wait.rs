//! `kubernetes.wait`: until a condition holds on any object, custom resources included.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Kube;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Output, When,
    WithProblem, out, support::the_connection,
};
use crate::runbook::{ConnectionKind, DurationText};

/// Wait until a condition in `status.conditions` has a status (`Ready`, `Ready=False`), or a
/// field has a value, on one object or on every object a selector matches (at least one), of
/// any kind the cluster serves. A condition the controller wrote for an older generation of
/// the object (its `observedGeneration`) does not count: it is about the spec before.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesWait {
    /// A `kubernetes` connection.
    pub connection: String,
    /// The kind: `Deployment`, `jobs`, `Widget.example.com`.
    pub kind: String,
    /// The object; or `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A label selector: every object it matches, and at least one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Overrides the connection's namespace (ignored for cluster-scoped kinds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `TYPE` (status `True`) or `TYPE=STATUS`: `Ready`, `Available`, `Ready=False`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// A JSON pointer into the object (`/status/phase`), with `equals`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The value `field` must have (compared as text: `Running`, `3`, `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    /// How long to wait (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<DurationText>,
}

impl KubernetesWait {
    fn what(&self) -> String {
        match (&self.condition, &self.field) {
            (Some(c), _) if c.contains('=') => format!("condition {c}"),
            (Some(c), _) => format!("condition {c}=True"),
            (None, Some(f)) => format!("{f} = {}", self.equals.as_deref().unwrap_or("?")),
            (None, None) => "(nothing)".into(),
        }
    }

    /// Whether `obj` is as asked, and its state in words.
    fn holds(&self, obj: &Value) -> (bool, String) {
        if let Some(c) = &self.condition {
            let (kind, status) = c.split_once('=').unwrap_or((c, "True"));
            let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
            let found = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter().find(|x| {
                        x["type"]
                            .as_str()
                            .is_some_and(|t| t.eq_ignore_ascii_case(kind))
                    })
                });
            return match found {
                None => (false, format!("no {kind} condition yet")),
                Some(x) => {
                    let stale = matches!(
                        (x["observedGeneration"].as_i64(), generation),
                        (Some(seen), Some(g)) if seen < g
                    );
                    let now = x["status"].as_str().unwrap_or("Unknown");
                    let why = [x["reason"].as_str(), x["message"].as_str()]
                        .into_iter()
                        .flatten()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(": ");
                    let words = if why.is_empty() {
                        format!("{kind}={now}")
                    } else {
                        format!("{kind}={now} ({why})")
                    };
                    if stale {
                        (false, format!("{words}, written for an older generation"))
                    } else {
                        (now.eq_ignore_ascii_case(status), words)
                    }
                }
            };
        }
        let f = self.field.as_deref().unwrap_or_default();
        let want = self.equals.as_deref().unwrap_or_default();
        match obj.pointer(f) {
            None => (false, format!("{f} is not set")),
            Some(v) => {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (text == want, format!("{f} = {text}"))
            }
        }
    }
}

impl ActionSpec for KubernetesWait {
    const NAME: &'static str = "kubernetes.wait";
    const SUMMARY: &'static str =
        "Wait until a condition (or field) holds on any object, custom resources included";
    const OUTPUTS: &'static [Output] = &[
        out("objects", "the objects waited for, `Kind ns/name`"),
        out(
            "state",
            "the condition (status, reason, message) or field as last read, per object",
        ),
    ];
    const READ_ONLY: When<Self> = When::Always;
    const DESTRUCTIVE: When<Self> = When::Never;
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let k = Kube::from_exec(cx, &self.connection, self.namespace.as_deref()).await?;
            let served = super::discover(&k).await?;
            let r = super::find_kind(&served, &self.kind)
                .map_err(ActionError::permanent)?
                .clone();
            let ns = r.namespaced.then(|| k.namespace.clone());
            let within = crate::actions::support::duration_or(
                self.within.as_ref(),
                std::time::Duration::from_secs(300),
            )?;
            let mut poll = super::Poll::new(within);
            let mut last = String::new();
            let mut read_once = false;
            loop {
                let read = match (&self.name, &self.selector) {
                    (Some(name), _) => r
                        .api(&k, ns.as_deref())
                        .get_opt(name)
                        .await
                        .map(|o| {
                            o.map(|o| {
                                let mut v = serde_json::to_value(o).expect("serializes");
                                v["kind"] = json!(r.ar.kind);
                                v
                            })
                            .into_iter()
                            .collect::<Vec<_>>()
                        })
                        .map_err(|e| {
                            super::classify(&e, &format!("reading {} {name}", r.ar.kind), &k.server)
                        }),
                    (None, sel) => {
                        super::Pages::new(&k, &r, ns.as_deref(), sel.as_deref())
                            .all()
                            .await
                    }
                };
                match read {
                    Ok(objs) => {
                        poll.ok();
                        read_once = true;
                        let states: Vec<(String, bool, String)> = objs
                            .iter()
                            .map(|o| {
                                let (ok, words) = self.holds(o);
                                (
                                    super::object_label(
                                        &r.ar.kind,
                                        ns.as_deref(),
                                        o["metadata"]["name"].as_str().unwrap_or_default(),
                                    ),
                                    ok,
                                    words,
                                )
                            })
                            .collect();
                        let summary = if states.is_empty() {
                            "no object yet".to_string()
                        } else {
                            states
                                .iter()
                                .map(|(l, _, w)| format!("{l}: {w}"))
                                .collect::<Vec<_>>()
                                .join("; ")
                        };
                        if !states.is_empty() && states.iter().all(|(_, ok, _)| *ok) {
                            let state: serde_json::Map<String, Value> = states
                                .iter()
                                .map(|(l, _, w)| (l.clone(), json!(w)))
                                .collect();
                            return Ok(json!({
                                "objects": states.iter().map(|(l, _, _)| l.clone()).collect::<Vec<_>>(),
                                "state": state,
                            }));
                        }
                        if summary != last {
                            (cx.progress)(&summary);
                            last = summary;
                        }
                    }
                    Err(e) => poll.failed(e, read_once)?,
                }
                poll.next(|t| format!("{} was not reached after {t}: {last}", self.what()))
                    .await?;
            }
        })
    }

    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::Kubernetes])
    }

    fn check(&self) -> Vec<WithProblem> {
        let mut p = Vec::new();
        match (&self.name, &self.selector) {
            (Some(n), None) => p.extend(super::name_problem("/name", n)),
            (None, Some(_)) => {}
            (Some(_), Some(_)) => p.push(WithProblem::new(
                "/selector",
                "give the object's `name` or a `selector`, not both",
            )),
            (None, None) => p.push(WithProblem::new(
                "",
                "give the object's `name` or a `selector`",
            )),
        }
        match (&self.condition, &self.field, &self.equals) {
            (Some(c), None, None) => {
                if c.is_empty() || c.contains(char::is_whitespace) || c.matches('=').count() > 1 {
                    p.push(WithProblem::new(
                        "/condition",
                        "a condition is `TYPE` or `TYPE=STATUS`: `Ready`, `Ready=False`",
                    ));
                }
            }
            (None, Some(f), Some(_)) => {
                if !f.starts_with('/') {
                    p.push(WithProblem::new(
                        "/field",
                        "a JSON pointer, such as `/status/phase`",
                    ));
                }
            }
            (None, Some(_), None) => p.push(WithProblem::new(
                "/field",
                "`field` needs the value it must have, in `equals`",
            )),
            (None, None, Some(_)) => p.push(WithProblem::new(
                "/equals",
                "`equals` needs the `field` it is about",
            )),
            (None, None, None) => p.push(WithProblem::new(
                "",
                "give a `condition` (`Ready`) or a `field` and `equals`",
            )),
            (Some(_), _, _) => p.push(WithProblem::new(
                "/condition",
                "give a `condition` or a `field`, not both",
            )),
        }
        p.extend(super::namespace_problem(
            "/namespace",
            self.namespace.as_deref(),
        ));
        p.extend(WithProblem::duration("/within", self.within.as_ref()));
        p
    }

    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let which = match (&self.name, &self.selector) {
            (Some(n), _) => format!("{} {n}", self.kind),
            (None, Some(s)) => format!("every {} matching `{s}` (at least one)", self.kind),
            _ => self.kind.clone(),
        };
        let ns = self
            .namespace
            .as_deref()
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default();
        format!(
            "wait up to {} until {} on {which}{ns} of {}",
            self.within
                .as_ref()
                .and_then(|d| d.0.as_str())
                .unwrap_or("5m"),
            self.what(),
            cx.connection(&self.connection)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::test_support::*;

    fn wait(extra: Value) -> KubernetesWait {
        let mut with = json!({"connection": "k", "kind": "Widget.example.com", "name": "w1"});
        for (k, v) in extra.as_object().unwrap() {
            with[k] = v.clone();
        }
        parse::<KubernetesWait>(with)
    }

    #[test]
    fn a_condition_counts_only_for_the_current_generation() {
        let w = wait(json!({"condition": "Ready"}));
        let obj = |status: &str, observed: i64| {
            json!({"metadata": {"generation": 2}, "status": {"conditions": [
                {"type": "Ready", "status": status, "reason": "Provisioned", "observedGeneration": observed}
            ]}})
        };
        assert_eq!(
            w.holds(&obj("True", 2)),
            (true, "Ready=True (Provisioned)".into())
        );
        assert!(!w.holds(&obj("True", 1)).0);
        assert!(w.holds(&obj("True", 1)).1.contains("older generation"));
        assert!(!w.holds(&obj("False", 2)).0);
        let failed = wait(json!({"condition": "Ready=False"}));
        assert!(failed.holds(&obj("False", 2)).0);
        assert_eq!(
            w.holds(&json!({})),
            (false, "no Ready condition yet".into())
        );
    }

    #[test]
    fn a_field_is_compared_as_text() {
        let w = wait(json!({"field": "/status/replicas", "equals": "3"}));
        assert!(w.holds(&json!({"status": {"replicas": 3}})).0);
        assert!(!w.holds(&json!({"status": {}})).0);
        assert_eq!(
            w.describe(&Cx),
            "wait up to 5m until /status/replicas = 3 on Widget.example.com w1 of <k>"
        );
    }

    #[test]
    fn one_object_or_a_selector_and_one_test() {
        let fields =
            |w: KubernetesWait| -> Vec<String> { w.check().into_iter().map(|p| p.field).collect() };
        assert!(fields(wait(json!({"condition": "Ready"}))).is_empty());
        assert_eq!(
            fields(wait(json!({"selector": "a=b", "condition": "Ready"}))),
            ["/selector"]
        );
        assert_eq!(fields(wait(json!({"field": "status"}))), ["/field"]);
        assert_eq!(fields(wait(json!({}))), [""]);
        assert_eq!(
            fields(wait(
                json!({"condition": "Ready", "field": "/x", "equals": "1"})
            )),
            ["/condition"]
        );
    }
}
