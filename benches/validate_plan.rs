//! validate + plan on generated runbooks of 100, 1,000 and 10,000 steps: chains, wide fan-out and
//! random DAGs. Prints a table; asserts nothing (timings on a shared machine are not test material).
//! Target: 10,000 steps in under 300 ms in release builds, growing linearly.
//!
//!     cargo bench --bench validate_plan

#![allow(clippy::print_stdout, clippy::print_stderr)] // a bench prints its table

use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
enum Shape {
    Chain,
    FanOut,
    Random,
}

/// A runbook of `n` steps. Every step has a template reading a param and, where it has a need, the
/// output of a need, so the template checks do their real work.
fn generate(shape: Shape, n: usize, seed: u64) -> String {
    let mut s = String::from(
        "apiVersion: lifeboat/v1\nkind: Runbook\nmetadata: {name: bench, version: 1.0.0}\n\
         params:\n  database: {type: string, default: orders}\n\
         connections:\n  db: {postgres: {url: \"postgres://app@127.0.0.1/{{ params.database }}\"}}\nsteps:\n",
    );
    let mut rng = seed;
    let mut next = || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) as usize
    };
    for i in 0..n {
        let needs: Vec<usize> = match shape {
            Shape::Chain if i > 0 => vec![i - 1],
            Shape::FanOut if i > 0 => vec![0],
            Shape::Random if i > 0 => {
                let k = 1 + next() % 3;
                let mut v: Vec<usize> = (0..k).map(|_| next() % i).collect();
                v.sort();
                v.dedup();
                v
            }
            _ => vec![],
        };
        let needs_yaml = if needs.is_empty() {
            String::new()
        } else {
            format!(
                "\n    needs: [{}]",
                needs
                    .iter()
                    .map(|d| format!("s{d}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let sql = match needs.first() {
            Some(d) => format!(
                "select {{{{ steps.s{d}.outputs.row_count }}}} from {{{{ params.database }}}}"
            ),
            None => "select 1 from {{ params.database }}".to_string(),
        };
        s.push_str(&format!(
            "  - id: s{i}\n    action: postgres.query{needs_yaml}\n    with: {{connection: db, sql: \"{sql}\"}}\n    assert: \"outputs.row_count >= 0\"\n"
        ));
    }
    s
}

/// A runbook of three steps whose middle one is a `for_each` over a list param of `n` items,
/// given on the command line: what a platform backup of many databases looks like.
fn generate_for_each() -> String {
    String::from(
        r#"apiVersion: lifeboat/v1
kind: Runbook
metadata: {name: bench, version: 1.0.0}
params:
  databases: {type: array, items: string, default: []}
connections:
  db: {postgres: {url: "postgres://app@127.0.0.1/postgres"}}
steps:
  - {id: stop, action: postgres.query, with: {connection: db, sql: select 1}}
  - id: count
    action: postgres.query
    needs: [stop]
    for_each: "{{ params.databases }}"
    max_parallel: 4
    with: {connection: db, sql: "select count(*) from {{ item | sql_ident }} where {{ steps.stop.outputs.row_count }} > 0"}
    assert: "outputs.row_count >= 0"
  - {id: done, action: postgres.query, needs: [count], with: {connection: db, sql: select 1}}
"#,
    )
}

fn measure(text: &str) -> (Duration, Duration) {
    measure_with(text, &[])
}

fn measure_with(text: &str, given: &[(String, String)]) -> (Duration, Duration) {
    let t0 = Instant::now();
    let loaded = lifeboat::runbook::load_str("bench.yaml", text);
    let rb = loaded
        .result
        .unwrap_or_else(|d| panic!("generated runbook is invalid: {d:?}"));
    let t1 = Instant::now();
    let params = lifeboat::runbook::params::resolve(&rb, given, true).unwrap();
    let plan = lifeboat::plan::build(&rb, &params).unwrap();
    std::hint::black_box(lifeboat::plan::render_json(&plan));
    (t1 - t0, t1.elapsed())
}

/// Where the time of one large case goes. The YAML parse is serde-saphyr's alone, measured apart
/// with the options lifeboat uses; "validate" includes its own parse.
fn phases(text: &str) {
    let mut rows = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let options = serde_saphyr::options! { strict_booleans: true, with_snippet: false, emit_comments: false };
        let v: serde_json::Value = serde_saphyr::from_str_with_options(text, options).unwrap();
        let yaml = t.elapsed();
        drop(v);
        let t = Instant::now();
        let rb = lifeboat::runbook::load_str("bench.yaml", text)
            .result
            .unwrap();
        let validate = t.elapsed();
        let t = Instant::now();
        let params = lifeboat::runbook::params::resolve(&rb, &[], true).unwrap();
        let plan = lifeboat::plan::build(&rb, &params).unwrap();
        let build = t.elapsed();
        let t = Instant::now();
        std::hint::black_box(lifeboat::plan::render_json(&plan));
        let json = t.elapsed();
        rows.push((validate + build + json, yaml, validate, build, json));
    }
    rows.sort_by_key(|r| r.0);
    let (_, yaml, validate, build, json) = rows[rows.len() / 2];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "\nrandom 10000, median: validate {:.1} ms (of which the YAML parse alone {:.1} ms), plan {:.1} ms, JSON render {:.1} ms",
        ms(validate),
        ms(yaml),
        ms(build),
        ms(json)
    );
}

fn main() {
    // Schema compilation is one-time per process; do it before timing.
    let _ = lifeboat::runbook::load_str("warm.yaml", &generate(Shape::Chain, 2, 1));
    println!(
        "{:<8} {:>7} {:>10} {:>12} {:>12} {:>12} {:>12}",
        "shape", "steps", "yaml KiB", "validate ms", "plan ms", "total ms", "µs/step"
    );
    for shape in [Shape::Chain, Shape::FanOut, Shape::Random] {
        for n in [100, 1_000, 10_000] {
            let text = generate(shape, n, 42);
            let runs = if n >= 10_000 { 5 } else { 15 };
            let mut samples: Vec<(Duration, Duration)> =
                (0..runs).map(|_| measure(&text)).collect();
            samples.sort_by_key(|(v, p)| *v + *p);
            let (v, p) = samples[runs / 2];
            let total = v + p;
            let name = match shape {
                Shape::Chain => "chain",
                Shape::FanOut => "fan-out",
                Shape::Random => "random",
            };
            println!(
                "{name:<8} {n:>7} {:>10.0} {:>12.1} {:>12.1} {:>12.1} {:>12.1}",
                text.len() as f64 / 1024.0,
                v.as_secs_f64() * 1e3,
                p.as_secs_f64() * 1e3,
                total.as_secs_f64() * 1e3,
                total.as_secs_f64() * 1e6 / n as f64
            );
        }
    }
    // `for_each`: validate is one step's; expanding into n steps is part of the plan.
    let text = generate_for_each();
    for n in [100, 1_000, 10_000] {
        let items: Vec<String> = (0..n).map(|i| format!("db{i}")).collect();
        let given = [("databases".to_string(), items.join(","))];
        let runs = if n >= 10_000 { 5 } else { 15 };
        let mut samples: Vec<(Duration, Duration)> =
            (0..runs).map(|_| measure_with(&text, &given)).collect();
        samples.sort_by_key(|(v, p)| *v + *p);
        let (v, p) = samples[runs / 2];
        let total = v + p;
        println!(
            "{:<8} {n:>7} {:>10.0} {:>12.1} {:>12.1} {:>12.1} {:>12.1}",
            "for_each",
            text.len() as f64 / 1024.0,
            v.as_secs_f64() * 1e3,
            p.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e6 / n as f64
        );
    }
    phases(&generate(Shape::Random, 10_000, 42));
}
