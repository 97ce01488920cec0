//! dns.failover and dns.verify against a real BIND 9 (RFC 2136, TSIG) and moto's Route 53 API.

use crate::common;
use common::dns::{DnsServer, Route53Server};
use common::sandbox::{Ran, Sandbox, runbook};

fn rfc2136_runbook(name: &str, dns: &DnsServer, zone: &str, steps: &str) -> String {
    runbook(
        name,
        &format!(
            "secrets:\n  tsig: {{env: LB_TSIG}}\nconnections:\n{}steps:\n{steps}",
            dns.connection("dns", zone)
        ),
    )
}

fn run(sb: &Sandbox, args: &[&str], secret: &str) -> Ran {
    sb.lifeboat_env(args, &[("LB_TSIG", secret)])
}

fn a(ttl: u32, v: &str) -> (u32, String) {
    (ttl, v.to_string())
}

#[test]
fn failover_verify_and_fail_back_through_bind() {
    let dns = DnsServer::start();
    let sb = Sandbox::new();
    let steps = format!(
        r#"
  - id: move
    action: dns.failover
    with: {{connection: dns, name: app.failover.test, type: A, targets: ["192.0.2.21", "192.0.2.20"], ttl: 30}}
    compensate:
      action: dns.failover
      with: {{connection: dns, name: app.failover.test., type: A, targets: "{{{{ outputs.previous }}}}", ttl: "{{{{ outputs.previous_ttl }}}}"}}
  - id: new_name
    action: dns.failover
    with: {{connection: dns, name: api.failover.test., type: AAAA, targets: ["2001:DB8:0::1"]}}
    compensate:
      action: dns.failover
      with: {{connection: dns, name: api.failover.test., type: AAAA, targets: "{{{{ outputs.previous }}}}", ttl: "{{{{ outputs.previous_ttl }}}}"}}
  - id: clients_see_it
    action: dns.verify
    needs: [move, new_name]
    with: {{name: www.failover.test., type: A, expect: ["192.0.2.20", "192.0.2.21"], server: "{}", within: 10s, interval: 200ms}}
  - id: smoke_test
    action: shell
    needs: [clients_see_it]
    with: {{script: "exit 3"}}
"#,
        dns.server()
    );
    sb.write(
        "r.yaml",
        &rfc2136_runbook("dns", &dns, "failover.test.", &steps),
    );

    // The dry run reads what the step would replace, with the step's own key.
    let plan = run(&sb, &["plan", "r.yaml", "--live"], &dns.secret);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(
        plan.stdout
            .contains("move: app.failover.test. A on 127.0.0.1:")
            && plan
                .stdout
                .contains("now [192.0.2.10] TTL 300, after [192.0.2.20, 192.0.2.21] TTL 30"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("new_name: api.failover.test. AAAA")
            && plan
                .stdout
                .contains("now no records, after [2001:db8::1] TTL 60"),
        "{}",
        plan.stdout
    );
    assert!(
        !plan.stdout.contains(&dns.secret),
        "the plan never shows the key"
    );
    assert_eq!(
        dns.dig("app.failover.test", "A"),
        [a(300, "192.0.2.10")],
        "a plan changes nothing"
    );

    let r = run(&sb, &["run", "r.yaml"], &dns.secret);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let id = r.run_id();
    let moved = sb.outputs(&id, "move");
    assert_eq!(moved["previous"], serde_json::json!(["192.0.2.10"]));
    assert_eq!(moved["previous_ttl"], 300);
    assert_eq!(
        moved["records"],
        serde_json::json!(["192.0.2.20", "192.0.2.21"])
    );
    assert_eq!(moved["changed"], true);
    let seen = sb.outputs(&id, "clients_see_it");
    assert_eq!(
        seen["answer"],
        serde_json::json!(["192.0.2.20", "192.0.2.21"]),
        "followed www's CNAME"
    );
    assert_eq!(seen["ttl"], 30);
    assert_eq!(
        sb.outputs(&id, "new_name")["previous"],
        serde_json::json!([])
    );

    // The records it replaces are on disk before the update is sent.
    let trace: Vec<String> = sb
        .events(&id)
        .iter()
        .filter(|e| e["step"] == "move")
        .map(|e| {
            format!(
                "{}{}",
                e["event"].as_str().unwrap(),
                e.get("key")
                    .map_or(String::new(), |k| format!(":{}", k.as_str().unwrap()))
            )
        })
        .collect();
    assert_eq!(
        &trace[..4],
        [
            "step_started",
            "step_noted:previous",
            "step_progress",
            "step_succeeded"
        ],
        "{trace:?}"
    );

    // smoke_test failed: the rollback put back exactly what was there, TTL included, and
    // removed the record that did not exist.
    assert_eq!(dns.dig("app.failover.test", "A"), [a(300, "192.0.2.10")]);
    assert_eq!(dns.dig("api.failover.test", "AAAA"), []);
    let status = sb.lifeboat(&["show", &id, "--json"]);
    let show: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        show["steps"]["move"]["state"]["state"], "compensated",
        "{}",
        status.stdout
    );
    let log = std::fs::read_to_string(sb.log_path(&id)).unwrap();
    assert!(
        !log.contains(&dns.secret) && !r.stderr.contains(&dns.secret),
        "the key stays out"
    );
}

#[test]
fn wrong_key_refused_update_and_unknown_zone_fail_once_in_words() {
    let dns = DnsServer::start();
    let sb = Sandbox::new();
    let step = |name: &str| {
        format!(
            "  - id: move\n    action: dns.failover\n    retry: {{attempts: 5, delay: 1s}}\n    with: {{connection: dns, name: {name}, type: A, targets: [\"192.0.2.20\"]}}\n"
        )
    };
    let cases = [
        (
            "wrong_key",
            "failover.test.",
            "app.failover.test.",
            "c29tZSBvdGhlciBzZWNyZXQ=",
            "rejected the signature of TSIG key `failover-key` (BADSIG): the secret is not the one the server has",
        ),
        (
            "refused",
            "readonly.test.",
            "app.readonly.test.",
            "",
            "refused the update (REFUSED): zone readonly.test. does not accept updates signed with key `failover-key`",
        ),
        (
            "unknown_zone",
            "nope.test.",
            "app.nope.test.",
            "",
            "refused the query (REFUSED): it does not serve zone nope.test.",
        ),
        (
            "outside_zone",
            "failover.test.",
            "app.other.test.",
            "",
            "app.other.test. is not in zone failover.test.",
        ),
        (
            "cname",
            "failover.test.",
            "www.failover.test.",
            "",
            "www.failover.test. is a CNAME (to app.failover.test.), which can hold no A records",
        ),
    ];
    for (file, zone, name, secret, message) in cases {
        let secret = if secret.is_empty() {
            dns.secret.clone()
        } else {
            secret.to_string()
        };
        sb.write(
            &format!("{file}.yaml"),
            &rfc2136_runbook(&file.replace('_', "-"), &dns, zone, &step(name)),
        );
        let r = run(&sb, &["run", &format!("{file}.yaml")], &secret);
        assert_eq!(r.code, 1, "{file}: {}", r.stderr);
        let trace = sb.trace(&r.run_id());
        assert!(
            trace.contains(&"step_failed:move".to_string())
                && !trace.iter().any(|t| t.starts_with("step_attempt_failed")),
            "{file}: one attempt, no retries: {trace:?}"
        );
        assert!(r.stderr.contains(message), "{file}: {}", r.stderr);
        assert!(!r.stderr.contains(&secret), "{file}: the secret stays out");
    }
    assert_eq!(dns.dig("app.failover.test", "A"), [a(300, "192.0.2.10")]);
    assert_eq!(dns.dig("app.readonly.test", "A"), [a(300, "192.0.2.10")]);

    // The dry run shows a wrong key before anything runs, and says so with its exit code.
    let plan = run(
        &sb,
        &["plan", "wrong_key.yaml", "--live"],
        "c29tZSBvdGhlciBzZWNyZXQ=",
    );
    assert_eq!(plan.code, 1);
    assert!(
        plan.stdout
            .contains("move: cannot read: reading app.failover.test. A: 127.0.0.1:"),
        "{}",
        plan.stdout
    );
}

#[test]
fn an_attempt_after_the_change_fails_back_to_the_records_before_it() {
    let dns = DnsServer::start();
    let sb = Sandbox::new();
    // The first attempt changes the records, then fails (its assert reads the environment);
    // the retry after `resume` must still know what was there before the first.
    let steps = r#"
  - id: move
    action: dns.failover
    with: {connection: dns, name: app.failover.test., type: A, targets: ["192.0.2.20"], ttl: 60}
    assert: "env.LB_PASS == '1'"
"#;
    sb.write(
        "r.yaml",
        &rfc2136_runbook("notes", &dns, "failover.test.", steps),
    );
    let r = sb.lifeboat_env(
        &["run", "r.yaml"],
        &[("LB_TSIG", &dns.secret), ("LB_PASS", "0")],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        dns.dig("app.failover.test", "A"),
        [a(60, "192.0.2.20")],
        "the change was made"
    );
    let id = r.run_id();
    let r = sb.lifeboat_env(
        &["resume", &id],
        &[("LB_TSIG", &dns.secret), ("LB_PASS", "1")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = sb.outputs(&id, "move");
    assert_eq!(
        out["previous"],
        serde_json::json!(["192.0.2.10"]),
        "recalled, not re-read"
    );
    assert_eq!(out["previous_ttl"], 300);
    assert_eq!(out["changed"], false);
    let notes = sb
        .events(&id)
        .into_iter()
        .filter(|e| e["event"] == "step_noted")
        .count();
    assert_eq!(notes, 1);
}

#[test]
fn verify_gives_up_after_within_and_says_what_it_saw() {
    let dns = DnsServer::start();
    let sb = Sandbox::new();
    let steps = format!(
        "  - id: see\n    action: dns.verify\n    with: {{name: app.failover.test., type: A, expect: [\"192.0.2.99\"], server: \"{}\", within: 1s, interval: 200ms}}\n",
        dns.server()
    );
    sb.write("r.yaml", &runbook("verify", &format!("steps:\n{steps}")));
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "{} still answers [192.0.2.10] for app.failover.test. A, not [192.0.2.99]",
            dns.server()
        )),
        "{}",
        r.stderr
    );
    let progress: Vec<_> = sb
        .events(&r.run_id())
        .into_iter()
        .filter(|e| e["event"] == "step_progress")
        .collect();
    assert_eq!(
        progress.len(),
        1,
        "progress when the answer changes, not on every query"
    );

    // A name with no records, and a server that does not answer: both are "not yet".
    let steps = "  - id: see\n    action: dns.verify\n    with: {name: none.failover.test., type: A, expect: [\"192.0.2.99\"], server: \"127.0.0.1:9\", within: 1s}\n";
    sb.write("dead.yaml", &runbook("verify", &format!("steps:\n{steps}")));
    let r = sb.lifeboat(&["run", "dead.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("127.0.0.1:9 still answers"),
        "{}",
        r.stderr
    );
}

#[test]
fn route53_upserts_waits_for_insync_and_fails_back() {
    let r53 = Route53Server::start();
    let sb = Sandbox::new();
    let steps = r#"
  - id: move
    action: dns.failover
    with: {connection: zone, name: app.failover.test., type: A, targets: ["192.0.2.20"], ttl: 30}
    compensate:
      action: dns.failover
      with: {connection: zone, name: app.failover.test., type: A, targets: "{{ outputs.previous }}", ttl: "{{ outputs.previous_ttl }}"}
  - id: alias
    action: dns.failover
    with: {connection: zone, name: orders.failover.test., type: CNAME, targets: [app.failover.test]}
    compensate:
      action: dns.failover
      with: {connection: zone, name: orders.failover.test., type: CNAME, targets: "{{ outputs.previous }}", ttl: "{{ outputs.previous_ttl }}"}
  - id: check
    action: shell
    needs: [move, alias]
    with: {script: "exit 3"}
"#;
    sb.write(
        "r.yaml",
        &runbook(
            "r53",
            &format!(
                "secrets:\n  aws_secret: {{env: LB_AWS_SECRET}}\nconnections:\n{}steps:\n{steps}",
                r53.connection("zone")
            ),
        ),
    );
    let env = [("LB_AWS_SECRET", "lifeboat-route53-secret-Kq2")];
    let plan = sb.lifeboat_env(&["plan", "r.yaml", "--live"], &env);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    assert!(plan.stdout.contains(&format!("move: app.failover.test. A on Route 53 hosted zone {}: now [192.0.2.10] TTL 300, after [192.0.2.20] TTL 30", r53.zone_id)), "{}", plan.stdout);

    let r = sb.lifeboat_env(&["run", "r.yaml"], &env);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let id = r.run_id();
    let moved = sb.outputs(&id, "move");
    assert_eq!(moved["previous"], serde_json::json!(["192.0.2.10"]));
    assert_eq!(moved["records"], serde_json::json!(["192.0.2.20"]));
    assert!(!moved["change_id"].as_str().unwrap().is_empty());
    assert_eq!(
        sb.outputs(&id, "alias")["records"],
        serde_json::json!(["app.failover.test."])
    );
    // Rolled back: the A record as it was, and the CNAME that did not exist deleted.
    assert_eq!(r53.records(), ["app.failover.test. A 300 192.0.2.10"]);

    // A zone that does not exist: one attempt, in words.
    let bad = std::fs::read_to_string(sb.path("r.yaml"))
        .unwrap()
        .replace(&r53.zone_id, "ZNOSUCHZONE");
    sb.write(
        "bad.yaml",
        &bad.replace(
            "  - id: move\n",
            "  - id: move\n    retry: {attempts: 4, delay: 1s}\n",
        ),
    );
    let r = sb.lifeboat_env(&["run", "bad.yaml"], &env);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("NoSuchHostedZone"), "{}", r.stderr);
    assert!(
        !sb.trace(&r.run_id())
            .iter()
            .any(|t| t == "step_attempt_failed:move"),
        "no retries"
    );
}

/// The shipped runbooks/region-failover.yaml, end to end: a real streaming replica promoted, a
/// real Deployment scaled up by the real controllers, BIND updated and checked.
#[test]
fn shipped_region_failover_drill_loses_the_primary_and_passes() {
    use common::kube::{FakeKubelet, KubeServer};
    use common::pg::{Cluster, PASSWORD};

    let primary = Cluster::start();
    primary.psql("postgres", "create database orders");
    primary.psql(
        "orders",
        "create table orders(id int primary key); insert into orders values (1), (2)",
    );
    let replica = Cluster::replica_of(&primary);
    replica.wait_for(
        "orders",
        "select count(*) from pg_class where relname = 'orders'",
        "1",
        100,
    );
    // A write the replica replays: its commit time is the point the drill's RPO counts from.
    primary.psql("orders", "insert into orders values (10)");
    replica.wait_for("orders", "select count(*) from orders", "3", 100);
    let k = KubeServer::start();
    k.namespace("orders");
    let _kubelet = FakeKubelet::start(&k, &["orders"]);
    k.apply(&[k.deployment("orders", "orders-api", 0)]);
    let dns = DnsServer::start();

    let sb = Sandbox::new();
    let file = common::root().join("runbooks/region-failover.yaml");
    let params = [
        "dr_address=192.0.2.77".to_string(),
        "replicas=2".to_string(),
        format!("dr_db_url={}", replica.url("orders")),
        format!("kubeconfig={}", k.kubeconfig.display()),
        "kube_context=admin".to_string(),
        format!("dns_server={}", dns.server()),
        format!("resolver={}", dns.server()),
        "announce=false".to_string(),
        "min_orders=2".to_string(),
        // The drill's fault: the primary region's database dies, no clean shutdown.
        format!(
            "primary_stop_command={} stop {}",
            common::root().join("scripts/pg-cluster").display(),
            primary.dir.display()
        ),
    ];
    let report = sb.path("report");
    let report = report.to_str().unwrap();
    let mut args = vec![
        "drill",
        file.to_str().unwrap(),
        "--scenario",
        "regional-failover",
        "--yes",
        "--report",
        report,
    ];
    for p in &params {
        args.extend(["-p", p.as_str()]);
    }
    let env = [
        ("PGPASSWORD", PASSWORD),
        ("LIFEBOAT_TSIG_SECRET", dns.secret.as_str()),
    ];
    let r = sb.lifeboat_env(&args, &env);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let id = r.run_id();
    assert!(
        primary
            .psql_as("postgres", PASSWORD, "postgres", "select 1")
            .is_err(),
        "the primary is down"
    );
    let md = sb.read("report.md");
    assert!(
        md.starts_with("# Drill PASSED: region-failover / regional-failover"),
        "{md}"
    );
    // RPO from the promoted replica's last replayed commit: the inserts made at setup.
    assert!(md.contains("(`promote`, output `replayed_at`)"), "{md}");

    assert_eq!(replica.psql("orders", "select pg_is_in_recovery()"), "f");
    replica.psql("orders", "insert into orders values (3)");
    let d = k.read("orders", "Deployment", "orders-api");
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(d["status"]["readyReplicas"], 2, "{}", d["status"]);
    assert_eq!(dns.dig("orders.failover.test", "A"), [a(60, "192.0.2.77")]);
    let moved = sb.outputs(&id, "move_dns");
    assert_eq!(moved["previous"], serde_json::json!(["192.0.2.10"]));
    assert_eq!(
        sb.outputs(&id, "clients_see_it")["answer"],
        serde_json::json!(["192.0.2.77"])
    );
    assert!(sb.trace(&id).contains(&"step_skipped:announce".to_string()));
    let log = std::fs::read_to_string(sb.log_path(&id)).unwrap();
    assert!(
        !log.contains(&dns.secret) && !log.contains(PASSWORD),
        "secrets stay out of the log"
    );
}
