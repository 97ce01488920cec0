//! `http.request`, `notify.webhook` and `wait` polling, against a real HTTP server on loopback
//! (a small one in this file: each path answers as a test needs, and every request is recorded).

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::sandbox::{Sandbox, runbook};

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// Serves until the test process ends. `/flaky` answers 503 twice, then 200 with JSON.
fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut parts = first.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let path = parts.next().unwrap_or("").to_string();
            let mut headers = Vec::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (k, v) = line.split_once(':').unwrap();
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
                headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let hits = {
                let mut l = log.lock().unwrap();
                l.push(Seen {
                    method,
                    path: path.clone(),
                    headers,
                    body: String::from_utf8_lossy(&body).into(),
                });
                l.iter().filter(|s| s.path == path).count()
            };
            let (status, body) = match path.as_str() {
                "/flaky" if hits <= 2 => ("503 Service Unavailable", "busy".to_string()),
                "/flaky" => ("200 OK", format!(r#"{{"ready": true, "hits": {hits}}}"#)),
                "/hook" | "/ok" => ("200 OK", "ok".to_string()),
                "/created" => ("201 Created", r#"{"id": 7}"#.to_string()),
                _ => ("404 Not Found", "no such thing".to_string()),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Server { port, seen }
}

#[test]
fn http_request_retries_5xx_parses_json_and_sends_an_idempotency_key() {
    let srv = server();
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "http",
            &format!(
                r#"
steps:
  - id: health
    action: http.request
    with: {{url: "http://127.0.0.1:{p}/flaky"}}
    retry: {{attempts: 3, delay: 10ms}}
    assert: "outputs.json.ready"
  - id: create
    action: http.request
    needs: [health]
    with:
      url: "http://127.0.0.1:{p}/created"
      method: POST
      body: {{hits: "{{{{ steps.health.outputs.json.hits }}}}"}}
      expect_status: [201]
"#,
                p = srv.port
            ),
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let events = sb.events(&r.run_id());
    let retried: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "step_attempt_failed")
        .collect();
    assert_eq!(retried.len(), 2);
    assert!(
        retried[0]["error"]
            .as_str()
            .unwrap()
            .contains("answered 503"),
        "{}",
        retried[0]
    );
    let created = events
        .iter()
        .filter(|e| e["event"] == "step_succeeded")
        .nth(1)
        .unwrap();
    assert_eq!(created["outputs"]["status"], 201);
    assert_eq!(created["outputs"]["json"]["id"], 7);
    let seen = srv.seen.lock().unwrap();
    let post = seen.iter().find(|s| s.method == "POST").unwrap();
    assert_eq!(post.body, r#"{"hits":3}"#);
    let key = post
        .headers
        .iter()
        .find(|(k, _)| k == "idempotency-key")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(key, format!("{}/create/1", r.run_id()));
}

#[test]
fn an_unexpected_4xx_fails_at_once_and_a_closed_port_is_retried() {
    let srv = server();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sb = Sandbox::new();
    // `missing` needs `nothing_there`: were they independent, `missing` could fail and stop
    // the run before `nothing_there`'s task had started (seen under load in CI).
    sb.write(
        "r.yaml",
        &runbook(
            "http",
            &format!(
                r#"
steps:
  - id: nothing_there
    action: http.request
    with: {{url: "http://127.0.0.1:{closed}/"}}
    retry: {{attempts: 2, delay: 10ms}}
    on_failure: continue
  - id: missing
    action: http.request
    needs: [nothing_there]
    with: {{url: "http://127.0.0.1:{p}/missing"}}
    retry: {{attempts: 5, delay: 10ms}}
"#,
                p = srv.port
            ),
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let trace = sb.trace(&r.run_id());
    assert_eq!(
        trace
            .iter()
            .filter(|t| *t == "step_started:nothing_there")
            .count(),
        2,
        "{trace:?}"
    );
    assert_eq!(
        trace
            .iter()
            .filter(|t| *t == "step_started:missing")
            .count(),
        1,
        "{trace:?}"
    );
    let events = sb.events(&r.run_id());
    let failed = events
        .iter()
        .find(|e| e["event"] == "step_failed" && e["step"] == "missing")
        .unwrap();
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("answered 404: no such thing"),
        "{failed}"
    );
}

#[test]
fn notify_webhook_posts_slack_compatible_json_and_masks_its_url_secret() {
    let srv = server();
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "notify",
            r##"
secrets:
  hook: {env: LB_HOOK_URL}
steps:
  - id: tell
    action: notify.webhook
    with: {url: "{{ secrets.hook }}", text: "restore of {{ run.runbook }} done", channel: "#ops"}
"##,
        ),
    );
    let url = format!("http://127.0.0.1:{}/hook", srv.port);
    let r = sb.lifeboat_env(&["run", "r.yaml"], &[("LB_HOOK_URL", &url)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let seen = srv.seen.lock().unwrap();
    let hook = seen.iter().find(|s| s.path == "/hook").unwrap();
    let body: serde_json::Value = serde_json::from_str(&hook.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"text": "restore of notify done", "channel": "#ops"})
    );
    let log = std::fs::read_to_string(sb.log_path(&r.run_id())).unwrap();
    assert!(!log.contains(&url), "the webhook URL is a credential");
}

#[test]
fn wait_polls_a_read_only_action_until_its_condition_holds() {
    let srv = server();
    let sb = Sandbox::new();
    sb.write(
        "r.yaml",
        &runbook(
            "wait",
            &format!(
                r#"
steps:
  - id: until_ready
    action: wait
    with:
      until: "outputs.status == 200 and outputs.json.ready"
      every: 20ms
      check: {{action: http.request, with: {{url: "http://127.0.0.1:{p}/flaky"}}}}
    timeout: 10s
"#,
                p = srv.port
            ),
        ),
    );
    let r = sb.lifeboat(&["run", "r.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let done = sb
        .events(&r.run_id())
        .into_iter()
        .find(|e| e["event"] == "step_succeeded")
        .unwrap();
    assert_eq!(done["outputs"]["polls"], 3, "{done}");
    assert_eq!(done["outputs"]["outputs"]["json"]["hits"], 3);
}

/// The shipped runbooks/postgres-backup.yaml with `alert_url`: a backup that cannot reach its
/// database fails, and its `on_failure` step posts the failed step and the error to the webhook.
#[test]
fn the_shipped_backup_posts_its_failure_to_a_webhook() {
    let srv = server();
    let sb = Sandbox::new();
    let file = common::root().join("runbooks/postgres-backup.yaml");
    let alert = format!("alert_url=http://127.0.0.1:{}/hook", srv.port);
    let r = sb.lifeboat_env(
        &[
            "run",
            file.to_str().unwrap(),
            "-p",
            // Nothing listens on port 1: the dump fails after its retries.
            "pg_url=postgres://lifeboat@127.0.0.1:1",
            "-p",
            "s3_endpoint=http://127.0.0.1:1",
            "-p",
            &alert,
        ],
        &[
            ("PGPASSWORD", "Pg-pass-0f9a2c"),
            ("LIFEBOAT_S3_SECRET_KEY", "S3-key-7d1e4b"),
            ("LIFEBOAT_S3_ACCESS_KEY", "AKIDTEST"),
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    let seen = srv.seen.lock().unwrap();
    let posts: Vec<&Seen> = seen.iter().filter(|s| s.path == "/hook").collect();
    assert_eq!(posts.len(), 1, "{seen:?}");
    let body: serde_json::Value = serde_json::from_str(&posts[0].body).unwrap();
    assert_eq!(body["failed_step"], "dump", "{body}");
    assert_eq!(body["run"], r.run_id().as_str(), "{body}");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("Backup of orders failed at step dump: ")
            && text.contains("Connection refused"),
        "{text}"
    );
    assert!(!text.contains("Pg-pass-0f9a2c"), "{text}");
    let events = sb.events(&r.run_id());
    let finished = events.last().unwrap();
    assert_eq!(finished["status"], "failed");
    assert!(
        finished["summary"]
            .as_str()
            .unwrap()
            .starts_with("step `dump` failed"),
        "{finished}"
    );
}
