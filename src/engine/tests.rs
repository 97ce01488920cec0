//! The engine in-process: the memory store, a scripted runner instead of real actions, signals
//! from a channel, answers from a list, and tokio's paused clock (a 30-second backoff takes no
//! time, and elapsed times are exact). Each test drives a real `Session` through the real run
//! loop and checks what the log says, in milliseconds.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use super::session::{self, NewRun, Resumed, Session, Wiring};
use super::signals::Signals;
use super::{
    Ended, Event, Notice, Options, Prompter, Question, RunState, RunStatus, Runner, Sink,
    StepState, parse_log,
};
use crate::actions::{Action, ActionError, ActionFuture, Exec};
use crate::error::Error;
use crate::store::Store;
use crate::store::memory::Memory;

/// What an attempt does, in place of the action.
#[derive(Clone, Debug)]
enum Act {
    Ok(Value),
    Transient(&'static str),
    Permanent(&'static str),
    /// Succeeds after this long.
    Sleep(Duration),
    /// Never ends by itself.
    Hang,
}

/// Outcomes by step (`step` or `step/compensate`) and attempt number; the last one repeats, and
/// a step not scripted succeeds. By attempt number, not by call, so that a resumed run meets
/// the same world as the run it continues.
#[derive(Default)]
struct Script {
    plan: HashMap<String, Vec<Act>>,
    /// Attempt keys, in the order attempts started.
    seen: Mutex<Vec<String>>,
}

impl Script {
    fn with(mut self, key: &str, acts: &[Act]) -> Script {
        self.plan.insert(key.to_string(), acts.to_vec());
        self
    }

    fn attempts_of(&self, key: &str) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|k| script_key(k) == key).count()
    }
}

/// `run/step/3` → `step`; `run/step/compensate/1` → `step/compensate`.
fn script_key(attempt_key: &str) -> String {
    let parts: Vec<&str> = attempt_key.split('/').collect();
    match parts[..] {
        [_, step, "compensate", _] => format!("{step}/compensate"),
        [_, step, _] => step.to_string(),
        _ => panic!("unexpected attempt key {attempt_key}"),
    }
}

impl Runner for Script {
    fn execute<'a>(&'a self, _: &'a Action, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        self.seen.lock().unwrap().push(cx.attempt_key.to_string());
        let attempt: usize = cx.attempt_key.rsplit('/').next().unwrap().parse().unwrap();
        let act = self
            .plan
            .get(&script_key(cx.attempt_key))
            .map(|acts| acts[(attempt - 1).min(acts.len() - 1)].clone())
            .unwrap_or(Act::Ok(json!({})));
        Box::pin(async move {
            match act {
                Act::Ok(v) => Ok(v),
                Act::Transient(e) => Err(ActionError::transient(e)),
                Act::Permanent(e) => Err(ActionError::permanent(e)),
                Act::Sleep(d) => {
                    tokio::time::sleep(d).await;
                    Ok(json!({}))
                }
                Act::Hang => std::future::pending().await,
            }
        })
    }
}

/// Every event as `name:step` (or `name`), and every notice.
#[derive(Default)]
struct Record {
    trace: Mutex<Vec<String>>,
    events: Mutex<Vec<Event>>,
    notices: Mutex<Vec<Notice>>,
}

impl Sink for Record {
    fn event(&self, _: u64, _: &str, e: &Event) {
        let name = e.to_map()["event"].as_str().unwrap().to_string();
        let line = match e.step() {
            Some(s) => format!("{name}:{s}"),
            None => name,
        };
        self.trace.lock().unwrap().push(line);
        self.events.lock().unwrap().push(e.clone());
    }
    fn notice(&self, n: &Notice) {
        self.notices.lock().unwrap().push(n.clone());
    }
}

impl Record {
    fn trace(&self) -> Vec<String> {
        self.trace.lock().unwrap().clone()
    }
}

/// Signals sent by the test.
struct Channel(tokio::sync::mpsc::UnboundedReceiver<&'static str>);

impl Signals for Channel {
    fn recv(&mut self) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(async move {
            match self.0.recv().await {
                Some(s) => s.to_string(),
                None => std::future::pending().await,
            }
        })
    }
}

/// Answers an operator would give, in order; `None` once they run out (nobody at the terminal).
#[derive(Default)]
struct Answers(Mutex<Vec<bool>>);

impl Prompter for Answers {
    fn ask(&self, _: Question) -> Pin<Box<dyn Future<Output = Option<bool>> + Send>> {
        let mut a = self.0.lock().unwrap();
        let next = if a.is_empty() {
            None
        } else {
            Some(a.remove(0))
        };
        Box::pin(async move { next })
    }
}

struct Harness {
    store: Store,
    script: Arc<Script>,
    sink: Arc<Record>,
    answers: Arc<Answers>,
    signal: tokio::sync::mpsc::UnboundedSender<&'static str>,
    signals: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<&'static str>>>,
    yes: bool,
    timeout: Option<Duration>,
}

fn harness(script: Script) -> Harness {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    Harness {
        store: Store::Memory(Memory::default()),
        script: Arc::new(script),
        sink: Arc::default(),
        answers: Arc::default(),
        signal: tx,
        signals: Mutex::new(Some(rx)),
        yes: false,
        timeout: None,
    }
}

/// One client for the whole test: building one costs ~30 ms (its TLS roots) in a debug build.
fn http() -> reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(reqwest::Client::new).clone()
}

const HEADER: &str =
    "apiVersion: lifeboat/v1\nkind: Runbook\nmetadata: {name: t, version: 1.0.0}\n";

impl Harness {
    fn session(&self) -> Session<'_> {
        // One receiver for the harness: a later session (resume) listens where the first did.
        let rx = self.signals.lock().unwrap().take().unwrap_or_else(|| {
            let (_, rx) = tokio::sync::mpsc::unbounded_channel();
            rx
        });
        Session {
            store: &self.store,
            opts: Options {
                max_parallel: 8,
                yes: self.yes,
                timeout: self.timeout,
                grace: Duration::from_secs(30),
                operator: "tester".into(),
                state: None,
            },
            wiring: Wiring {
                sink: self.sink.clone(),
                prompter: self.answers.clone(),
                http: http(),
                runner: self.script.clone(),
                signals: Box::new(Channel(rx)),
            },
        }
    }

    async fn start(&self, steps: &str) -> Ended {
        let text = format!("{HEADER}{steps}");
        let rb = crate::runbook::load_str("t.yaml", &text)
            .result
            .unwrap_or_else(|d| panic!("the test's runbook is valid: {d:?}"));
        let params = Default::default();
        let ready = self
            .session()
            .start(NewRun {
                file: std::path::Path::new("t.yaml"),
                text: text.as_bytes(),
                runbook: &rb,
                params: &params,
                drill: None,
                parent: None,
            })
            .await
            .unwrap();
        ready.drive().await.unwrap()
    }

    async fn resume(&self, run: &str) -> Result<Option<Ended>, Error> {
        match self.session().resume(run).await? {
            Resumed::AlreadySucceeded => Ok(None),
            Resumed::Ready(r) => r.drive().await.map(Some),
        }
    }

    fn memory(&self) -> &Memory {
        match &self.store {
            Store::Memory(m) => m,
            _ => unreachable!(),
        }
    }

    /// The run's log checked against the head its store keeps.
    fn verified(&self, run: &str) -> crate::runlog::Verdict {
        let head = self.memory().head(run).unwrap();
        crate::runlog::verify(run, &self.log(run), head.as_ref())
    }

    fn log(&self, run: &str) -> Vec<u8> {
        self.memory().read_log(run).unwrap()
    }

    fn state(&self, run: &str) -> RunState {
        let events = parse_log(&String::from_utf8(self.log(run)).unwrap()).unwrap();
        let mut ids: Vec<String> = Vec::new();
        for r in &events {
            if let Some(s) = r.event.step()
                && !ids.iter().any(|i| i == s)
            {
                ids.push(s.to_string());
            }
        }
        RunState::replay(ids.iter().map(String::as_str), &events)
    }
}

/// A run as a crash leaves it: the runbook and the first `cut` bytes of a log, no head anchor
/// (the process died before writing it), in a store of its own.
fn crashed(script: Script, runbook: &str, log: &[u8], cut: usize) -> (Harness, String) {
    let mut h = harness(script);
    h.yes = true;
    let first: serde_json::Value =
        serde_json::from_slice(log.split(|&b| b == b'\n').next().unwrap()).unwrap();
    let run = first["run"].as_str().unwrap().to_string();
    let m = h.memory();
    drop(m.create_run(&run, format!("{HEADER}{runbook}").as_bytes()));
    m.publish_run(&run).unwrap();
    m.run(&run)
        .log
        .lock()
        .unwrap()
        .extend_from_slice(&log[..cut]);
    (h, run)
}

/// Where each line of a log ends (the byte after its newline).
fn line_ends(log: &[u8]) -> Vec<usize> {
    log.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .collect()
}

/// Where a crash may cut a log: at every line's end, and in the middle of every line (a torn
/// write).
fn cuts(log: &[u8]) -> Vec<usize> {
    let ends = line_ends(log);
    let mut cuts = ends.clone();
    cuts.extend(ends.windows(2).map(|w| (w[0] + w[1]) / 2));
    cuts
}

/// Where the first line holding `marker` ends.
fn after(log: &[u8], marker: &str) -> usize {
    let text = std::str::from_utf8(log).unwrap();
    let at = text.find(marker).unwrap();
    at + text[at..].find('\n').unwrap() + 1
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn steps_run_in_dependency_order_and_outputs_reach_templates() {
    let h = harness(Script::default().with("a", &[Act::Ok(json!({"stdout": "7"}))]));
    let end = h
        .start(
            r#"steps:
  - {id: a, action: shell, with: {argv: [x]}}
  - {id: b, action: shell, needs: [a], with: {argv: [echo, "{{ steps.a.outputs.stdout }}"]}}
"#,
        )
        .await;
    assert_eq!(end.status, RunStatus::Succeeded);
    assert_eq!(
        h.sink.trace(),
        strings(&[
            "run_started",
            "step_started:a",
            "step_succeeded:a",
            "step_started:b",
            "step_succeeded:b",
            "run_finished"
        ])
    );
    let events = h.sink.events.lock().unwrap();
    let b_inputs = events.iter().find_map(|e| match e {
        Event::StepStarted { step, inputs, .. } if step == "b" => Some(inputs.clone()),
        _ => None,
    });
    assert_eq!(b_inputs.unwrap()["argv"], json!(["echo", "7"]));
    let verdict = h.verified(&end.run_id);
    assert!(verdict.first_bad.is_none());
    assert_eq!(verdict.last_hash, end.log_hash);
}

/// Transient errors are retried after the policy's delays (exact, on the paused clock);
/// permanent ones end the step at once; the policy's last attempt is the last.
#[tokio::test(start_paused = true)]
async fn retry_decisions() {
    struct Case {
        acts: &'static [Act],
        retry: &'static str,
        status: RunStatus,
        attempts: usize,
        delays_ms: &'static [u64],
    }
    let cases = [
        Case {
            acts: &[
                Act::Transient("busy"),
                Act::Transient("busy"),
                Act::Ok(Value::Null),
            ],
            retry: "{attempts: 4, delay: 1s, factor: 3.0, max_delay: 1m, jitter: false}",
            status: RunStatus::Succeeded,
            attempts: 3,
            delays_ms: &[1000, 3000],
        },
        Case {
            acts: &[Act::Transient("busy")],
            retry: "{attempts: 3, delay: 10s, factor: 2.0, max_delay: 15s, jitter: false}",
            status: RunStatus::Failed,
            attempts: 3,
            delays_ms: &[10_000, 15_000],
        },
        Case {
            acts: &[Act::Permanent("no such table")],
            retry: "{attempts: 5, delay: 1s, jitter: false}",
            status: RunStatus::Failed,
            attempts: 1,
            delays_ms: &[],
        },
    ];
    for (n, c) in cases.iter().enumerate() {
        let h = harness(Script::default().with("s", c.acts));
        let end = h
            .start(&format!(
                "steps:\n  - {{id: s, action: shell, with: {{argv: [x]}}, retry: {}}}\n",
                c.retry
            ))
            .await;
        assert_eq!(end.status, c.status, "case {n}");
        assert_eq!(h.script.attempts_of("s"), c.attempts, "case {n}");
        let events = h.sink.events.lock().unwrap();
        let delays: Vec<u64> = events
            .iter()
            .filter_map(|e| match e {
                Event::StepAttemptFailed { retry_in_ms, .. } => *retry_in_ms,
                _ => None,
            })
            .collect();
        assert_eq!(delays, c.delays_ms, "case {n}");
        if c.status == RunStatus::Succeeded {
            let took = events.iter().find_map(|e| match e {
                Event::StepSucceeded { elapsed_ms, .. } => Some(*elapsed_ms),
                _ => None,
            });
            // The step's time includes its backoff, to the millisecond on the paused clock.
            assert_eq!(took, Some(c.delays_ms.iter().sum()), "case {n}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_attempt_past_its_timeout_is_cancelled_and_counts_as_transient() {
    let h = harness(Script::default().with("slow", &[Act::Hang, Act::Ok(json!({}))]));
    let end = h
        .start(
            "steps:\n  - {id: slow, action: shell, with: {argv: [x]}, timeout: 90s, retry: {attempts: 2, delay: 1s, jitter: false}}\n",
        )
        .await;
    assert_eq!(end.status, RunStatus::Succeeded);
    let events = h.sink.events.lock().unwrap();
    let failed = events.iter().find_map(|e| match e {
        Event::StepAttemptFailed {
            error,
            transient,
            elapsed_ms,
            ..
        } => Some((error.clone(), *transient, *elapsed_ms)),
        _ => None,
    });
    assert_eq!(failed, Some(("timed out after 1m30s".into(), true, 90_000)));
}

#[tokio::test(start_paused = true)]
async fn the_runs_own_timeout_cancels_running_steps_and_rolls_back() {
    let mut h = harness(Script::default().with("hang", &[Act::Hang]));
    h.timeout = Some(Duration::from_secs(60));
    let end = h
        .start(
            r#"steps:
  - {id: undo_me, action: shell, with: {argv: [x]}, compensate: {action: shell, with: {argv: [y]}}}
  - {id: hang, action: shell, needs: [undo_me], with: {argv: [x]}, timeout: 1h}
"#,
        )
        .await;
    assert_eq!(end.status, RunStatus::Failed);
    let st = h.state(&end.run_id);
    assert_eq!(
        st.steps["hang"].state,
        StepState::Interrupted { attempt: 1 }
    );
    assert_eq!(st.steps["undo_me"].state, StepState::Compensated);
    assert!(
        st.summary
            .unwrap()
            .starts_with("the run's timeout of 1m passed; rolled back"),
        "{:?}",
        h.sink.trace()
    );
}

/// The runbook's `timeout` is the run's deadline when `--timeout` gives none, and `--timeout`
/// wins over it.
#[tokio::test(start_paused = true)]
async fn the_runbooks_timeout_is_the_deadline_unless_the_flag_gives_one() {
    let steps = r#"timeout: 2m
steps:
  - {id: hang, action: shell, with: {argv: [x]}, timeout: 1h}
"#;
    for (flag, passed) in [(None, "2m"), (Some(Duration::from_secs(60)), "1m")] {
        let mut h = harness(Script::default().with("hang", &[Act::Hang]));
        h.timeout = flag;
        let end = h.start(steps).await;
        assert_eq!(end.status, RunStatus::Failed);
        let summary = h.state(&end.run_id).summary.unwrap();
        assert!(
            summary.starts_with(&format!("the run's timeout of {passed} passed")),
            "{summary}"
        );
    }
}

/// Rollback runs the compensations of what completed, newest first; a failed compensation is
/// reported and the others still run.
#[tokio::test(start_paused = true)]
async fn rollback_order_and_an_incomplete_rollback() {
    let steps = r#"steps:
  - {id: first, action: shell, with: {argv: [x]}, compensate: {action: shell, with: {argv: [undo]}}}
  - {id: second, action: shell, needs: [first], with: {argv: [x]}, compensate: {action: shell, with: {argv: [undo]}}}
  - {id: breaks, action: shell, needs: [second], with: {argv: [x]}}
"#;
    let h = harness(Script::default().with("breaks", &[Act::Permanent("disk full")]));
    let end = h.start(steps).await;
    assert_eq!(end.status, RunStatus::Failed);
    let trace = h.sink.trace();
    let rollback: Vec<&String> = trace
        .iter()
        .skip_while(|t| *t != "rollback_started")
        .collect();
    assert_eq!(
        rollback,
        [
            "rollback_started",
            "compensation_started:second",
            "compensation_succeeded:second",
            "compensation_started:first",
            "compensation_succeeded:first",
            "rollback_finished",
            "run_finished"
        ]
    );
    assert_eq!(
        h.state(&end.run_id).summary.as_deref(),
        Some("step `breaks` failed: disk full; rolled back (2 compensated)")
    );

    let h = harness(
        Script::default()
            .with("breaks", &[Act::Permanent("disk full")])
            .with("second/compensate", &[Act::Permanent("gone")]),
    );
    let end = h.start(steps).await;
    let st = h.state(&end.run_id);
    assert_eq!(st.steps["first"].state, StepState::Compensated);
    assert_eq!(
        st.summary.as_deref(),
        Some(
            "step `breaks` failed: disk full; rollback incomplete: 1 compensated, 1 failed (second): check by hand"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn on_failure_continue_and_skipped_needs() {
    let h = harness(Script::default().with("optional", &[Act::Permanent("nope")]));
    let end = h
        .start(
            r#"steps:
  - {id: optional, action: shell, with: {argv: [x]}, on_failure: continue}
  - {id: after, action: shell, needs: [optional], with: {argv: [x]}}
  - {id: never, action: shell, with: {argv: [x]}, when: "false"}
  - {id: because, action: shell, needs: [never], with: {argv: [x]}}
"#,
        )
        .await;
    assert_eq!(end.status, RunStatus::Succeeded);
    let st = h.state(&end.run_id);
    assert_eq!(
        st.steps["optional"].state,
        StepState::Failed { continued: true }
    );
    assert!(matches!(
        st.steps["after"].state,
        StepState::Succeeded { .. }
    ));
    assert!(matches!(
        &st.steps["never"].state,
        StepState::Skipped { need: None, .. }
    ));
    assert!(
        matches!(&st.steps["because"].state, StepState::Skipped { need: Some(n), .. } if n == "never")
    );
}

/// A fallback path reads how an upstream step settled: `steps.<id>.status` (`failed` for a step
/// with `on_failure: continue`, `skipped`, `succeeded`) and `steps.<id>.error`; after a resume
/// too, where the statuses come back from the log.
#[tokio::test(start_paused = true)]
async fn a_fallback_path_reads_how_the_steps_before_it_settled() {
    let h = harness(Script::default().with("primary", &[Act::Permanent("replica lag 9m")]));
    let end = h
        .start(
            r#"steps:
  - {id: primary, action: shell, with: {argv: [x]}, on_failure: continue}
  - {id: normal, action: shell, needs: [primary], with: {argv: [x]}, when: "steps.primary.status == 'succeeded'"}
  - {id: gate, action: approval, needs: [primary], with: {message: "fall back?"}}
  - id: fallback
    action: shell
    needs: [gate]
    when: "steps.primary.status == 'failed' and 'replica lag' in steps.primary.error"
    with: {argv: [x]}
  - id: report
    action: shell
    needs: [normal, fallback]
    on_skipped_needs: run
    when: "steps.normal.status == 'skipped' and steps.fallback.status == 'succeeded'"
    with: {argv: [x]}
"#,
        )
        .await;
    assert_eq!(end.status, RunStatus::WaitingForApproval);
    session::approve(&h.store, h.sink.clone(), &end.run_id, "gate")
        .await
        .unwrap();
    let again = h.resume(&end.run_id).await.unwrap().unwrap();
    assert_eq!(again.status, RunStatus::Succeeded, "{:?}", h.sink.trace());
    assert_eq!(h.script.attempts_of("normal"), 0);
    assert_eq!(h.script.attempts_of("fallback"), 1);
    assert_eq!(h.script.attempts_of("report"), 1);
}

/// A gate nobody answers stops the run (locks paused); `approve` records who approved through
/// the emitter, and `resume` goes on from the gate.
#[tokio::test(start_paused = true)]
async fn an_approval_gate_waits_then_approve_and_resume_finish_the_run() {
    let h = harness(Script::default());
    let end = h
        .start(
            r#"locks: [orders]
steps:
  - {id: gate, action: approval, with: {message: "go?"}}
  - {id: after, action: shell, needs: [gate], with: {argv: [x]}}
"#,
        )
        .await;
    assert_eq!(end.status, RunStatus::WaitingForApproval);
    assert_eq!(h.script.attempts_of("after"), 0);
    *h.memory().who.lock().unwrap() = "ann".into();
    let wrong = session::approve(&h.store, h.sink.clone(), &end.run_id, "gaet")
        .await
        .unwrap_err();
    assert_eq!(
        wrong.to_string(),
        format!(
            "run {} has no step `gaet`; did you mean `gate`?",
            end.run_id
        )
    );
    session::approve(&h.store, h.sink.clone(), &end.run_id, "gate")
        .await
        .unwrap();
    let again = h.resume(&end.run_id).await.unwrap().unwrap();
    assert_eq!(again.status, RunStatus::Succeeded);
    let st = h.state(&end.run_id);
    assert_eq!(
        st.steps["gate"].outputs.as_ref().unwrap()["approved_by"],
        "ann"
    );
    assert_eq!(h.script.attempts_of("after"), 1);
    // The chain stayed whole through the approval written by another "process".
    assert!(h.verified(&end.run_id).intact());
}

#[tokio::test(start_paused = true)]
async fn an_operator_who_declines_fails_the_run() {
    let h = harness(Script::default());
    h.answers.0.lock().unwrap().push(false);
    let end = h
        .start(
            r#"steps:
  - {id: gate, action: approval, with: {message: "go?"}}
  - {id: after, action: shell, needs: [gate], with: {argv: [x]}}
"#,
        )
        .await;
    assert_eq!(end.status, RunStatus::Failed);
    assert!(h.sink.trace().contains(&"approval_denied:gate".to_string()));
    assert_eq!(h.script.attempts_of("after"), 0);
}

/// The first SIGINT lets running steps finish within the grace period and stops the run as
/// interrupted (nothing rolled back); `resume` finishes it.
#[tokio::test(start_paused = true)]
async fn an_interrupt_stops_cleanly_and_resume_finishes() {
    let h = harness(Script::default().with("long", &[Act::Sleep(Duration::from_secs(10))]));
    let tx = h.signal.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        tx.send("SIGINT").unwrap();
    });
    let end = h
        .start(
            r#"steps:
  - {id: long, action: shell, with: {argv: [x]}}
  - {id: next, action: shell, needs: [long], with: {argv: [x]}}
"#,
        )
        .await;
    assert_eq!(end.status, RunStatus::Interrupted);
    let st = h.state(&end.run_id);
    assert!(matches!(
        st.steps["long"].state,
        StepState::Succeeded { .. }
    ));
    assert!(
        !st.steps.contains_key("next"),
        "nothing started after the signal"
    );
    let again = h.resume(&end.run_id).await.unwrap().unwrap();
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(h.script.attempts_of("long"), 1);
}

/// A second signal cancels what still runs: the attempt is recorded as interrupted.
#[tokio::test(start_paused = true)]
async fn a_second_interrupt_cancels_the_running_attempt() {
    let h = harness(Script::default().with("stuck", &[Act::Hang]));
    let tx = h.signal.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send("SIGINT").unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send("SIGTERM").unwrap();
    });
    let end = h
        .start("steps:\n  - {id: stuck, action: shell, with: {argv: [x]}, timeout: 1h}\n")
        .await;
    assert_eq!(end.status, RunStatus::Interrupted);
    let st = h.state(&end.run_id);
    assert_eq!(
        st.steps["stuck"].state,
        StepState::Interrupted { attempt: 1 }
    );
}

/// A step cut short by a crash may have taken effect: resume asks before running it again,
/// unless it is idempotent (read-only here) or `--yes` answers.
#[tokio::test(start_paused = true)]
async fn a_step_cut_short_by_a_crash_runs_again_only_when_safe_or_approved() {
    let steps = r#"steps:
  - {id: changes, action: shell, with: {argv: [x]}}
  - {id: reads, action: wait, needs: [changes], with: {for: 1s}}
"#;
    let h = harness(Script::default());
    let end = h.start(steps).await;
    let full = h.log(&end.run_id);

    // Crash while `changes` ran: not idempotent, nobody to ask → waits for an approval.
    let (mut h, run) = crashed(
        Script::default(),
        steps,
        &full,
        after(&full, "\"step_started\""),
    );
    h.yes = false;
    let again = h.resume(&run).await.unwrap().unwrap();
    assert_eq!(again.status, RunStatus::WaitingForApproval);
    assert!(
        h.sink
            .trace()
            .contains(&"step_interrupted:changes".to_string())
    );
    assert_eq!(h.script.attempts_of("changes"), 0);

    // The same with --yes: run again, and recorded as approved by --yes.
    let (h, run) = crashed(
        Script::default(),
        steps,
        &full,
        after(&full, "\"step_started\""),
    );
    let again = h.resume(&run).await.unwrap().unwrap();
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(h.script.attempts_of("changes"), 1);
    assert!(
        h.sink
            .trace()
            .contains(&"approval_granted:changes".to_string())
    );

    // Crash while the read-only `reads` ran: it runs again without asking.
    let (mut h, run) = crashed(
        Script::default(),
        steps,
        &full,
        after(&full, "\"step\":\"reads\""),
    );
    h.yes = false;
    let again = h.resume(&run).await.unwrap().unwrap();
    assert_eq!(again.status, RunStatus::Succeeded);
    assert!(!h.sink.trace().iter().any(|t| t.starts_with("approval")));
}

#[tokio::test(start_paused = true)]
async fn resume_repairs_a_torn_line_and_refuses_a_tampered_log() {
    let h = harness(Script::default().with("b", &[Act::Permanent("broken")]));
    let end = h
        .start(
            "steps:\n  - {id: a, action: wait, with: {for: 1s}}\n  - {id: b, action: shell, needs: [a], with: {argv: [x]}}\n",
        )
        .await;
    assert_eq!(end.status, RunStatus::Failed);
    let run = end.run_id.clone();
    // Half a line, as a crash in the middle of a write leaves it.
    h.memory()
        .run(&run)
        .log
        .lock()
        .unwrap()
        .extend_from_slice(b"{\"seq\":99,\"ts\":\"2026");
    h.resume(&run).await.unwrap();
    assert_eq!(
        h.sink.notices.lock().unwrap().as_slice(),
        [Notice::TornLineRemoved]
    );
    assert!(h.verified(&run).intact());

    // One changed byte in an earlier line breaks the chain: resume refuses to go on.
    {
        let mem = h.memory().run(&run);
        let mut log = mem.log.lock().unwrap();
        let at = log.windows(6).position(|w| w == b"wait\",").unwrap();
        log[at] = b'W';
    }
    let refused = h.resume(&run).await.unwrap_err();
    assert!(matches!(refused, Error::Failed(_)));
    assert!(
        refused.to_string().contains("fails verification at line"),
        "{refused}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lock_is_refused_while_held_and_taken_over_from_a_crashed_run() {
    let h = harness(Script::default());
    let steps = "locks: [orders]\nsteps:\n  - {id: gate, action: approval, with: {message: go}}\n";
    let text = format!("{HEADER}{steps}");
    let rb = crate::runbook::load_str("t.yaml", &text).result.unwrap();
    let params = Default::default();
    let new = || NewRun {
        file: std::path::Path::new("t.yaml"),
        text: text.as_bytes(),
        runbook: &rb,
        params: &params,
        drill: None,
        parent: None,
    };
    // Recorded, locks taken, then the process dies before driving: its lock stays `held` by a
    // run whose process is gone.
    let crashed = h.session().start(new()).await.unwrap();
    let crashed_id = crashed.run_id().to_string();
    drop(crashed);
    let next = h.session().start(new()).await.unwrap();
    let waiting = next.drive().await.unwrap();
    assert_eq!(waiting.status, RunStatus::WaitingForApproval);
    let events = h.sink.events.lock().unwrap().clone();
    assert!(events.iter().any(|e| matches!(
        e,
        Event::LockTakenOver { lock, from_run, .. } if lock == "orders" && *from_run == crashed_id
    )));
    // A run paused at its gate keeps its locks: another run cannot start.
    let refused = h.session().start(new()).await.err().unwrap();
    assert!(matches!(refused, Error::Held(_)), "{refused}");
    assert_eq!(refused.exit(), crate::exit::Exit::LockHeld);
}

/// Once a step has failed, nothing new starts, even a step the run loop decided to start (its
/// need had just succeeded) before it heard of the failure.
#[tokio::test(start_paused = true)]
async fn no_step_starts_after_a_failure_is_recorded() {
    for parallel_failures in 1..=3 {
        let mut steps = String::from("steps:\n  - {id: ok, action: shell, with: {argv: [x]}}\n");
        steps += "  - {id: after, action: shell, needs: [ok], with: {argv: [x]}}\n";
        let mut script = Script::default().with("ok", &[Act::Ok(json!({}))]);
        for k in 0..parallel_failures {
            steps += &format!("  - {{id: bad{k}, action: shell, with: {{argv: [x]}}}}\n");
            script = script.with(&format!("bad{k}"), &[Act::Permanent("no")]);
        }
        let h = harness(script);
        let end = h.start(&steps).await;
        assert_eq!(end.status, RunStatus::Failed);
        let trace = h.sink.trace();
        assert!(
            !trace.contains(&"step_started:after".to_string()),
            "{parallel_failures}: {trace:?}"
        );
        assert!(
            !h.state(&end.run_id).steps.contains_key("after"),
            "nothing of `after` is in the log"
        );
    }
}

/// A resumed run redoes what a rollback undid before anything that depends on it, even through
/// a step that succeeded and had nothing to undo.
#[tokio::test(start_paused = true)]
async fn a_resumed_run_redoes_undone_steps_before_their_dependents() {
    let steps = r#"steps:
  - {id: stop, action: shell, with: {argv: [x]}, compensate: {action: shell, with: {argv: [undo]}}}
  - {id: copy, action: shell, needs: [stop], with: {argv: [x]}, compensate: {action: shell, with: {argv: [undo]}}}
  - {id: check, action: shell, needs: [copy], with: {argv: [x]}}
  - {id: side, action: shell, with: {argv: [x]}}
  - {id: restart, action: shell, needs: [check, side], with: {argv: [x]}}
"#;
    let h = harness(
        Script::default().with("restart", &[Act::Permanent("not yet"), Act::Ok(json!({}))]),
    );
    let end = h.start(steps).await;
    assert_eq!(end.status, RunStatus::Failed);
    let before = h.sink.trace().len();
    let resumed = h.resume(&end.run_id).await.unwrap().unwrap();
    assert_eq!(resumed.status, RunStatus::Succeeded);
    let started: Vec<String> = h.sink.trace()[before..]
        .iter()
        .filter_map(|t| t.strip_prefix("step_started:").map(str::to_string))
        .collect();
    // `check` and `side` succeeded and were not undone: they stay done.
    assert_eq!(started, ["stop", "copy", "restart"]);
}

/// A crash at any line of a run's log leaves a run that `resume --yes` finishes, with the
/// same ending as a run that never crashed, and a log whose chain holds. The run retries,
/// fails, and rolls back, so cuts fall in every phase.
#[tokio::test(start_paused = true)]
async fn a_crash_at_any_line_leaves_a_run_resume_can_finish() {
    let steps = r#"steps:
  - {id: stop, action: shell, with: {argv: [x]}, compensate: {action: shell, with: {argv: [undo]}, retry: {attempts: 2, delay: 1s}}}
  - {id: copy, action: shell, needs: [stop], with: {argv: [x]}, retry: {attempts: 3, delay: 2s}, compensate: {action: shell, with: {argv: [undo]}}}
  - {id: check, action: wait, needs: [copy], with: {for: 1s}}
  - {id: breaks, action: shell, needs: [check], with: {argv: [x]}}
"#;
    let script = || {
        Script::default()
            .with("copy", &[Act::Transient("busy"), Act::Ok(json!({}))])
            .with("breaks", &[Act::Permanent("disk full")])
            .with(
                "stop/compensate",
                &[Act::Transient("flaky"), Act::Ok(json!({}))],
            )
    };
    let h = harness(script());
    let end = h.start(steps).await;
    assert_eq!(end.status, RunStatus::Failed);
    let full = h.log(&end.run_id);
    assert_eq!(
        line_ends(&full).len(),
        20,
        "the run retries, fails and rolls back"
    );
    let cuts = cuts(&full);
    for cut in cuts {
        let (h, run) = crashed(script(), steps, &full, cut);
        let run = run.as_str();
        let ended = h
            .resume(run)
            .await
            .unwrap_or_else(|e| panic!("cut at byte {cut}: {e}"));
        let st = h.state(run);
        assert!(
            ended.as_ref().is_none_or(|e| e.status == RunStatus::Failed),
            "cut at byte {cut}: {ended:?}"
        );
        assert_eq!(st.status, RunStatus::Failed, "cut at byte {cut}");
        for step in ["stop", "copy"] {
            assert_eq!(
                st.steps[step].state,
                StepState::Compensated,
                "cut at byte {cut}: {step}"
            );
        }
        assert!(h.verified(run).intact(), "cut at byte {cut}");
    }
}

/// A secret may happen to equal a word of the log's own structure: an event or status name, a
/// step id, a field name. Masking must leave the structure alone, so each such run finishes,
/// folds to the right state, and verifies, while the secret is still masked in its text.
#[tokio::test(start_paused = true)]
async fn a_secret_equal_to_a_structural_word_never_breaks_the_log() {
    let words = [
        "run_started",
        "run_resumed",
        "step_started",
        "step_succeeded",
        "step_failed",
        "step_skipped",
        "step_interrupted",
        "approval_granted",
        "approval_requested",
        "rollback_started",
        "compensation_started",
        "run_finished",
        "running",
        "succeeded",
        "failed",
        "interrupted",
        "waiting_for_approval",
        "command",
        "prompt",
        "yes_flag",
        "event",
        "step",
        "attempt",
        "status",
        "outputs",
        "inputs",
        "error",
        "true",
        "null",
        "copy",
        "shell",
        "tester",
        "t.yaml",
    ];
    for word in words {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, word).unwrap();
        let steps = format!(
            r#"secrets:
  s: {{file: "{}"}}
steps:
  - {{id: copy, action: shell, with: {{argv: [x, "{{{{ secrets.s }}}}"]}}}}
  - {{id: after, action: shell, needs: [copy], with: {{argv: [x]}}}}
"#,
            file.display()
        );
        let h = harness(
            Script::default().with("copy", &[Act::Ok(json!({"stdout": format!("got {word}")}))]),
        );
        let end = h.start(&steps).await;
        assert_eq!(end.status, RunStatus::Succeeded, "secret `{word}`");
        let st = h.state(&end.run_id);
        assert!(
            matches!(st.steps["after"].state, StepState::Succeeded { .. }),
            "secret `{word}`"
        );
        assert_eq!(
            st.steps["copy"].outputs.as_ref().unwrap()["stdout"],
            "got ***",
            "secret `{word}`"
        );
        assert!(h.verified(&end.run_id).intact());
    }
}

/// Who may pass a gate: only its approvers, as the store identifies them; `--yes` passes only
/// gates that name none; a prompt is put only to someone who may answer it.
#[tokio::test(start_paused = true)]
async fn gate_decisions() {
    struct Case {
        approvers: &'static str,
        yes: bool,
        who: &'static str,
        answers: &'static [bool],
        status: RunStatus,
        by: Option<(&'static str, &'static str)>,
    }
    let cases = [
        // No approvers: --yes passes it, recorded as this identity.
        Case {
            approvers: "[]",
            yes: true,
            who: "tester",
            answers: &[],
            status: RunStatus::Succeeded,
            by: Some(("tester", "yes_flag")),
        },
        // No approvers: the prompt's yes, by this identity.
        Case {
            approvers: "[]",
            yes: false,
            who: "tester",
            answers: &[true],
            status: RunStatus::Succeeded,
            by: Some(("tester", "prompt")),
        },
        // Approvers: --yes does not pass it; nobody here may answer; it waits.
        Case {
            approvers: "[ann]",
            yes: true,
            who: "tester",
            answers: &[true],
            status: RunStatus::WaitingForApproval,
            by: None,
        },
        // Approvers, and this identity is one: --yes still does not pass it, the prompt may.
        Case {
            approvers: "[ann, tester]",
            yes: true,
            who: "tester",
            answers: &[true],
            status: RunStatus::Succeeded,
            by: Some(("tester", "prompt")),
        },
        Case {
            approvers: "[ann]",
            yes: false,
            who: "ann",
            answers: &[true],
            status: RunStatus::Succeeded,
            by: Some(("ann", "prompt")),
        },
        // An approver who says no fails the run.
        Case {
            approvers: "[ann]",
            yes: false,
            who: "ann",
            answers: &[false],
            status: RunStatus::Failed,
            by: None,
        },
        // Approvers, nobody answers: waits.
        Case {
            approvers: "[ann]",
            yes: true,
            who: "ann",
            answers: &[],
            status: RunStatus::WaitingForApproval,
            by: None,
        },
    ];
    for (n, c) in cases.iter().enumerate() {
        let mut h = harness(Script::default());
        h.yes = c.yes;
        *h.memory().who.lock().unwrap() = c.who.into();
        h.answers.0.lock().unwrap().extend(c.answers);
        let end = h
            .start(&format!(
                "steps:\n  - {{id: gate, action: approval, with: {{message: go, approvers: {}}}}}\n  - {{id: after, action: shell, needs: [gate], with: {{argv: [x]}}}}\n",
                c.approvers
            ))
            .await;
        assert_eq!(end.status, c.status, "case {n}");
        let st = h.state(&end.run_id);
        let by = st.steps["gate"].outputs.as_ref().map(|o| {
            (
                o["approved_by"].as_str().unwrap().to_string(),
                o["via"].as_str().unwrap().to_string(),
            )
        });
        assert_eq!(
            by,
            c.by.map(|(b, v)| (b.to_string(), v.to_string())),
            "case {n}"
        );
    }
}

/// `approve` records who the store says is acting, once; not someone else, not twice; and a
/// grant by a non-approver in the log (written by hand, or before this rule) passes nothing.
#[tokio::test(start_paused = true)]
async fn an_approval_is_by_an_approver_and_recorded_once() {
    let h = harness(Script::default());
    let end = h
        .start("steps:\n  - {id: gate, action: approval, with: {message: go, approvers: [ann]}}\n  - {id: after, action: shell, needs: [gate], with: {argv: [x]}}\n")
        .await;
    assert_eq!(end.status, RunStatus::WaitingForApproval);
    let run = end.run_id.clone();
    *h.memory().who.lock().unwrap() = "mallory".into();
    let refused = session::approve(&h.store, h.sink.clone(), &run, "gate")
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("may be approved only by ann; you are `mallory`"),
        "{refused}"
    );
    *h.memory().who.lock().unwrap() = "ann".into();
    session::approve(&h.store, h.sink.clone(), &run, "gate")
        .await
        .unwrap();
    let twice = session::approve(&h.store, h.sink.clone(), &run, "gate")
        .await
        .unwrap_err();
    assert!(
        twice.to_string().contains("is already approved, by ann"),
        "{twice}"
    );
    let again = h.resume(&run).await.unwrap().unwrap();
    assert_eq!(again.status, RunStatus::Succeeded);

    // A grant by a non-approver, well chained, as if a crashed process had written it, is not
    // an approval.
    let h = harness(Script::default());
    let end = h
        .start("steps:\n  - {id: gate, action: approval, with: {message: go, approvers: [ann]}}\n")
        .await;
    let run = end.run_id.clone();
    let (seq, prev) = {
        let st = h.state(&run);
        (st.last_seq, h.verified(&run).last_hash)
    };
    let forged = Event::ApprovalGranted {
        step: "gate".into(),
        by: "mallory".into(),
        via: crate::engine::ApprovalVia::Command,
    };
    let line =
        crate::runlog::format_line(seq + 1, "2026-11-30T00:00:00.000Z", &forged.to_map(), &prev);
    h.memory()
        .run(&run)
        .log
        .lock()
        .unwrap()
        .extend_from_slice(format!("{line}\n").as_bytes());
    // As a crashed process's would be: after an open head.
    h.memory().reopen_head(&run);
    let again = h.resume(&run).await.unwrap().unwrap();
    assert_eq!(again.status, RunStatus::WaitingForApproval);
}

/// Lines added after a run stopped, the head deleted with the log cut short, or another run's
/// log put in its place: `resume` refuses each, so nothing that succeeded runs again.
#[tokio::test(start_paused = true)]
async fn resume_refuses_a_log_changed_after_its_run_stopped() {
    let steps = "steps:\n  - {id: once, action: shell, with: {argv: [x]}}\n  - {id: gate, action: approval, needs: [once], with: {message: go}}\n";
    type Attack = fn(&Memory, &str, &str);
    let attacks: [(&str, Attack); 4] = [
        (
            "a forged step_failed appended after the closed head",
            |m, run, _| {
                let log = m.read_log(run).unwrap();
                let v = crate::runlog::verify(run, &log, m.head(run).unwrap().as_ref());
                let forged = Event::StepFailed {
                    step: "once".into(),
                    attempt: 1,
                    error: "x".into(),
                    elapsed_ms: 0,
                    continued: false,
                };
                let line = crate::runlog::format_line(
                    v.lines + 1,
                    "2026-11-30T00:00:00.000Z",
                    &forged.to_map(),
                    &v.last_hash,
                );
                m.run(run)
                    .log
                    .lock()
                    .unwrap()
                    .extend_from_slice(format!("{line}\n").as_bytes());
            },
        ),
        ("cut to its first line, head deleted", |m, run, _| {
            let mem = m.run(run);
            let mut log = mem.log.lock().unwrap();
            let first = log.iter().position(|&b| b == b'\n').unwrap() + 1;
            log.truncate(first);
            drop(log);
            m.delete_head(run);
        }),
        ("cut to its first line, head left", |m, run, _| {
            let mem = m.run(run);
            let mut log = mem.log.lock().unwrap();
            let first = log.iter().position(|&b| b == b'\n').unwrap() + 1;
            log.truncate(first);
        }),
        (
            "another run's log and head in its place",
            |m, run, other| {
                let theirs = m.read_log(other).unwrap();
                *m.run(run).log.lock().unwrap() = theirs;
                let head = m.head(other).unwrap().unwrap();
                m.write_head(run, &head).unwrap();
            },
        ),
    ];
    for (what, attack) in attacks {
        let h = harness(Script::default());
        let other = h.start(steps).await;
        let end = h.start(steps).await;
        assert_eq!(end.status, RunStatus::WaitingForApproval);
        attack(h.memory(), &end.run_id, &other.run_id);
        assert!(!h.verified(&end.run_id).intact(), "{what}: verify");
        let refused = h
            .resume(&end.run_id)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what}: resumed"));
        assert!(
            refused.to_string().contains("fails verification"),
            "{what}: {refused}"
        );
        assert_eq!(h.script.attempts_of("once"), 2, "{what}: nothing ran again");
    }
}

const ENDING: &str = r#"steps:
  - {id: stop, action: shell, with: {argv: [x]}, compensate: {action: shell, with: {argv: [undo]}}}
  - {id: copy, action: shell, needs: [stop], with: {argv: [x]}}
  - {id: check, action: shell, needs: [copy], with: {argv: [x]}}
on_failure:
  - {id: page, action: shell, with: {argv: [page, "{{ run.failed_step }}", "{{ run.error }}", "{{ steps.stop.status }}", "{{ steps.check.status }}"]}}
  - {id: ticket, action: shell, with: {argv: [x]}}
  - {id: escalate, action: shell, needs: [ticket], with: {argv: [x]}}
finally:
  - {id: tidy, action: shell, with: {argv: [tidy, "{{ run.status }}"]}}
"#;

fn argv_of(h: &Harness, step: &str) -> Value {
    let events = h.sink.events.lock().unwrap();
    events
        .iter()
        .find_map(|e| match e {
            Event::StepStarted {
                step: s, inputs, ..
            } if s == step => Some(inputs["argv"].clone()),
            _ => None,
        })
        .unwrap_or(Value::Null)
}

/// `on_failure` runs after the rollback and sees how the run ended; a failure among the
/// ending steps skips only what needs it, and is reported beside the run's own failure.
#[tokio::test(start_paused = true)]
async fn on_failure_and_finally_run_after_the_rollback_and_never_hide_the_failure() {
    let h = harness(
        Script::default()
            .with("copy", &[Act::Permanent("disk full")])
            .with("ticket", &[Act::Permanent("tracker down")]),
    );
    let end = h.start(ENDING).await;
    assert_eq!(end.status, RunStatus::Failed);
    let trace = h.sink.trace();
    let at = |t: &str| {
        trace
            .iter()
            .position(|x| x == t)
            .unwrap_or_else(|| panic!("{t} in {trace:?}"))
    };
    assert!(at("compensation_succeeded:stop") < at("handlers_started"));
    assert!(at("step_succeeded:page") < at("step_started:tidy"));
    assert!(at("step_failed:ticket") < at("step_started:tidy"));
    assert_eq!(
        argv_of(&h, "page"),
        json!(["page", "copy", "disk full", "compensated", "not_run"])
    );
    assert_eq!(argv_of(&h, "tidy"), json!(["tidy", "failed"]));
    assert_eq!(h.script.attempts_of("escalate"), 0);
    let st = h.state(&end.run_id);
    assert!(matches!(
        &st.steps["escalate"].state,
        StepState::Skipped { reason, .. } if reason == "needs `ticket`, which failed"
    ));
    let summary = st.summary.unwrap();
    assert!(
        summary.starts_with("step `copy` failed: disk full; rolled back"),
        "{summary}"
    );
    assert!(
        summary.contains("after it, `ticket` failed: tracker down"),
        "{summary}"
    );
}

/// After a success only `finally` runs, and its failure fails the run.
#[tokio::test(start_paused = true)]
async fn finally_runs_after_a_success_and_its_failure_fails_the_run() {
    let h = harness(Script::default());
    let end = h.start(ENDING).await;
    assert_eq!(end.status, RunStatus::Succeeded);
    assert_eq!(h.script.attempts_of("page"), 0);
    assert_eq!(argv_of(&h, "tidy"), json!(["tidy", "succeeded"]));

    let h = harness(Script::default().with("tidy", &[Act::Permanent("no space")]));
    let end = h.start(ENDING).await;
    assert_eq!(end.status, RunStatus::Failed);
    let summary = h.state(&end.run_id).summary.unwrap();
    assert_eq!(summary, "3 steps done; after it, `tidy` failed: no space");
}

/// A crash at any line of a failing run's log, the ending steps included: resume finishes
/// the run failed, with every ending step settled, and never runs `steps` again once the run
/// had ended.
#[tokio::test(start_paused = true)]
async fn a_crash_while_the_ending_steps_run_is_finished_by_resume() {
    let script = || Script::default().with("copy", &[Act::Permanent("disk full")]);
    let h = harness(script());
    let end = h.start(ENDING).await;
    assert_eq!(end.status, RunStatus::Failed);
    let full = h.log(&end.run_id);
    let handlers_at = after(&full, "\"handlers_started\"");
    for cut in cuts(&full) {
        let (h, run) = crashed(script(), ENDING, &full, cut);
        let ended = h
            .resume(&run)
            .await
            .unwrap_or_else(|e| panic!("cut at byte {cut}: {e}"));
        let st = h.state(&run);
        assert_eq!(st.status, RunStatus::Failed, "cut at byte {cut}: {ended:?}");
        for step in ["page", "ticket", "escalate", "tidy"] {
            assert!(
                matches!(st.steps[step].state, StepState::Succeeded { .. }),
                "cut at byte {cut}: {step} is {:?}",
                st.steps[step].state
            );
        }
        if cut >= handlers_at && cut < full.len() {
            // The run had ended and not finished: only its ending steps are left to do. (A
            // finished failed run is resumed to try again, from its failed step.)
            assert_eq!(h.script.attempts_of("copy"), 0, "cut at byte {cut}");
            assert_eq!(h.script.attempts_of("stop/compensate"), 0);
            assert!(
                st.summary
                    .as_deref()
                    .unwrap()
                    .starts_with("step `copy` failed: disk full"),
                "cut at byte {cut}: {:?}",
                st.summary
            );
        }
        assert!(h.verified(&run).intact(), "cut at byte {cut}");
    }
}

const EACH: &str = r#"steps:
  - {id: stop, action: shell, with: {argv: [x]}}
  - id: backup
    action: shell
    needs: [stop]
    for_each: [orders, users, billing]
    max_parallel: 1
    with: {argv: [dump, "{{ item }}"]}
  - {id: report, action: shell, needs: [backup], with: {argv: [report, "{{ steps.backup.outputs | map(attribute='db') | join(',') }}", "{{ steps.backup.status }}"]}}
"#;

fn each_script() -> Script {
    Script::default()
        .with("backup[orders]", &[Act::Ok(json!({"db": "orders"}))])
        .with("backup[users]", &[Act::Ok(json!({"db": "users"}))])
        .with("backup[billing]", &[Act::Ok(json!({"db": "billing"}))])
}

/// A `for_each` step is one step per item, each with its own attempt and checkpoint, at most
/// `max_parallel` at a time; a `needs` on the group waits for all, and reads their outputs as a
/// list.
#[tokio::test(start_paused = true)]
async fn for_each_makes_a_step_per_item_and_the_group_is_read_as_a_list() {
    let h = harness(each_script());
    let end = h.start(EACH).await;
    assert_eq!(end.status, RunStatus::Succeeded, "{:?}", h.sink.trace());
    let trace = h.sink.trace();
    let starts: Vec<&String> = trace
        .iter()
        .filter(|t| t.starts_with("step_started:backup["))
        .collect();
    assert_eq!(
        starts,
        [
            "step_started:backup[orders]",
            "step_started:backup[users]",
            "step_started:backup[billing]"
        ]
    );
    // One at a time: each starts after the one before it succeeded.
    let at = |t: &str| trace.iter().position(|x| x == t).unwrap();
    assert!(at("step_succeeded:backup[orders]") < at("step_started:backup[users]"));
    assert!(at("step_succeeded:backup[users]") < at("step_started:backup[billing]"));
    assert_eq!(argv_of(&h, "backup[users]"), json!(["dump", "users"]));
    assert_eq!(
        argv_of(&h, "report"),
        json!(["report", "orders,users,billing", "succeeded"])
    );
}

/// A crash after some items finished: resume runs only the others, then what needs the group.
#[tokio::test(start_paused = true)]
async fn a_crash_in_the_middle_of_a_for_each_resumes_with_the_items_left() {
    let h = harness(each_script());
    let end = h.start(EACH).await;
    let full = h.log(&end.run_id);
    let cut = after(
        &full,
        "\"step\":\"backup[orders]\",\"attempt\":1,\"outputs\"",
    );
    let (h, run) = crashed(each_script(), EACH, &full, cut);
    let again = h.resume(&run).await.unwrap().unwrap();
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(h.script.attempts_of("backup[orders]"), 0);
    assert_eq!(h.script.attempts_of("backup[users]"), 1);
    assert_eq!(h.script.attempts_of("backup[billing]"), 1);
    assert_eq!(
        argv_of(&h, "report"),
        json!(["report", "orders,users,billing", "succeeded"])
    );
}

/// `abort --rollback` of a run waiting at a gate, cut by a crash at any line after it began:
/// whatever takes the run over next (here `resume`) finishes the abort, its rollback once.
#[tokio::test(start_paused = true)]
async fn an_abort_cut_short_is_finished_by_whatever_takes_the_run_over() {
    let steps = r#"steps:
  - {id: stop, action: shell, with: {argv: [x]}, compensate: {action: shell, with: {argv: [undo]}}}
  - {id: gate, action: approval, needs: [stop], with: {message: go}}
"#;
    let h = harness(Script::default());
    let end = h.start(steps).await;
    assert_eq!(end.status, RunStatus::WaitingForApproval);
    let abort = session::Abort {
        rollback: true,
        reason: Some("primary is back".into()),
    };
    let Resumed::Ready(ready) = h.session().abort(&end.run_id, abort).await.unwrap() else {
        panic!("a waiting run can be aborted");
    };
    let ended = ready.drive().await.unwrap();
    assert_eq!(ended.status, RunStatus::Aborted);
    assert_eq!(h.script.attempts_of("stop/compensate"), 1);
    let full = h.log(&end.run_id);
    let from = after(&full, "\"run_aborted\"");
    let ends: Vec<usize> = line_ends(&full)
        .into_iter()
        .filter(|&e| e >= from && e < full.len())
        .collect();
    assert!(!ends.is_empty());
    for cut in ends {
        let (mut h, run) = crashed(Script::default(), steps, &full, cut);
        h.yes = false;
        let again = h.resume(&run).await.unwrap().unwrap();
        assert_eq!(again.status, RunStatus::Aborted, "cut at byte {cut}");
        let st = h.state(&run);
        assert_eq!(
            st.steps["stop"].state,
            StepState::Compensated,
            "cut at byte {cut}"
        );
        assert_eq!(h.script.attempts_of("gate"), 0);
        assert!(
            st.summary.as_deref().unwrap().contains("primary is back"),
            "cut at byte {cut}: {:?}",
            st.summary
        );
        assert!(h.verified(&run).intact(), "cut at byte {cut}");
    }
}
