//! Point-in-time recovery with pgBackRest (runbooks/postgres-pitr.yaml and its readiness
//! runbook) against a real cluster archiving WAL into an encrypted repository on a TLS S3
//! gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::common::pgbackrest::{CIPHER_PASS, Pitr, WRITER_PASSWORD};
use crate::common::root;
use crate::common::sandbox::Sandbox;

fn lifeboat(sb: &Sandbox, pitr: &Pitr, args: &[&str]) -> crate::common::sandbox::Ran {
    let env = pitr.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    sb.lifeboat_env(args, &env)
}

/// A full backup of the stanza, by lifeboat (step `full`).
fn full_backup(sb: &Sandbox, pitr: &Pitr) -> crate::common::sandbox::Ran {
    sb.write(
        "b.yaml",
        &pitr.runbook(
            "pitr-base",
            "",
            "  - {id: full, action: pgbackrest.backup, with: {connection: repo, type: full}}\n",
        ),
    );
    let r = lifeboat(sb, pitr, &["run", "b.yaml", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r
}

/// runbooks/postgres-pitr.yaml, as lifeboat is given it.
fn pitr_runbook() -> String {
    root()
        .join("runbooks/postgres-pitr.yaml")
        .display()
        .to_string()
}

fn no_secret_anywhere(sb: &Sandbox, texts: &[&str]) {
    for t in texts {
        assert!(!t.contains(CIPHER_PASS), "the passphrase leaked: {t}");
    }
    for entry in walkdir::WalkDir::new(sb.dir.path()).into_iter().flatten() {
        if entry.file_type().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(CIPHER_PASS),
                "the passphrase is in {}",
                entry.path().display()
            );
        }
    }
}

#[test]
fn backups_info_verify_and_expire_against_the_repository() {
    let pitr = Pitr::start();
    let sb = Sandbox::new();
    // 1% of the rows change between the second full backup and the incremental.
    let db = format!(
        "  db: {{postgres: {{url: \"{}\", password: \"{{{{ secrets.pg }}}}\"}}}}\n",
        pitr.pg.url("orders")
    );
    let steps = "  - {id: full1, action: pgbackrest.backup, with: {connection: repo, type: full}}
  - {id: full2, action: pgbackrest.backup, needs: [full1], with: {connection: repo, type: full}}
  - id: change
    action: postgres.query
    needs: [full2]
    with: {connection: db, sql: \"update orders set note = note || '!' where id % 100 = 0\", writes: true}
  - {id: incr, action: pgbackrest.backup, needs: [change], with: {connection: repo}}
  - {id: info, action: pgbackrest.info, needs: [incr], with: {connection: repo, max_wal_age: 10m, max_backup_age: 1h}}
  - {id: verify, action: pgbackrest.verify, needs: [info], with: {connection: repo}}
  - {id: would_expire, action: pgbackrest.expire, needs: [verify], with: {connection: repo, retention_full: 1, dry_run: true}}
";
    sb.write("b.yaml", &pitr.runbook("pitr-backups", &db, steps));
    let ran = lifeboat(&sb, &pitr, &["run", "b.yaml", "--yes"]);
    assert_eq!(ran.code, 0, "{}\n{}", ran.stdout, ran.stderr);
    let run = ran.run_id();
    let full = sb.outputs(&run, "full2");
    let incr = sb.outputs(&run, "incr");
    assert_eq!(full["type"], "full");
    assert_eq!(incr["type"], "incr");
    assert_eq!(incr["prior"], full["label"]);
    assert!(
        incr["repo_delta_bytes"].as_u64().unwrap() < full["repo_delta_bytes"].as_u64().unwrap()
    );
    let info = sb.outputs(&run, "info");
    assert_eq!(info["backups"], 3);
    assert_eq!(info["cipher"], "aes-256-cbc");
    assert_eq!(info["newest_backup"]["label"], incr["label"]);
    assert!(info["wal_age_seconds"].as_i64().unwrap() >= 0);
    assert!(info["newest_wal_at"].as_str().unwrap().ends_with('Z'));
    let first = sb.outputs(&run, "full1")["label"]
        .as_str()
        .unwrap()
        .to_string();
    let would = sb.outputs(&run, "would_expire");
    assert_eq!(would["dry_run"], true);
    assert_eq!(would["expired"], serde_json::json!([first]), "{would}");
    // The dry run removed nothing.
    sb.write(
        "i.yaml",
        &pitr.runbook(
            "pitr-info",
            "",
            "  - {id: info, action: pgbackrest.info, with: {connection: repo}}\n",
        ),
    );
    let r = lifeboat(&sb, &pitr, &["run", "i.yaml", "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sb.outputs(&r.run_id(), "info")["backups"], 3);
    no_secret_anywhere(&sb, &[&ran.stdout, &ran.stderr]);
}

#[test]
fn the_accidental_delete_drill_recovers_to_just_before_it_while_writers_write() {
    let pitr = Pitr::start();
    let sb = Sandbox::new();
    full_backup(&sb, &pitr);

    // The application goes on writing through the drill, as the writer role.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        let port = pitr.pg.port;
        std::thread::spawn(move || {
            let cluster = crate::common::pg::Cluster::attach(port);
            while !stop.load(Ordering::Relaxed) {
                if cluster
                    .psql_as(
                        "app_rw",
                        WRITER_PASSWORD,
                        "orders",
                        "insert into orders (note) values ('live')",
                    )
                    .is_ok()
                {
                    written.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    while written.load(Ordering::Relaxed) < 5 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let file = pitr_runbook();
    let args = pitr.pitr_args(
        &[
            "drill",
            &file,
            "--scenario",
            "accidental-delete",
            "--yes",
            "--json",
            "--report",
            "report",
        ],
        &["restore_point=lifeboat-drill-before-delete"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = lifeboat(&sb, &pitr, &args);
    // Writers come back after the promotion.
    let before = written.load(Ordering::Relaxed);
    std::thread::sleep(std::time::Duration::from_secs(1));
    for _ in 0..100 {
        if written.load(Ordering::Relaxed) > before + 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let rep: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rep["passed"], true, "{rep}");
    assert!(
        written.load(Ordering::Relaxed) > before + 2,
        "writers did not come back"
    );

    // Nothing of the delete survived: every third order is back.
    let db = &pitr.pg;
    assert_eq!(
        db.psql(
            "orders",
            "select count(*) from orders where id <= 1000 and id % 3 = 0"
        ),
        "333"
    );
    assert_eq!(db.psql("orders", "select pg_is_in_recovery()"), "f");
    let run = rep["run"].as_str().unwrap().to_string();
    let restored = sb.outputs(&run, "restore");
    assert_eq!(restored["restored_as_of_source"], "replayed");
    assert_eq!(restored["in_recovery"], true);
    assert_eq!(restored["target"], "name lifeboat-drill-before-delete");
    // The RPO is measured from the data: the last commit replayed, before the incident and no
    // older than the newest row that existed when the restore point was made.
    let as_of: jiff::Timestamp = rep["restored_as_of"]["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let incident: jiff::Timestamp = rep["incident_at"].as_str().unwrap().parse().unwrap();
    let marked: jiff::Timestamp = sb.outputs(&run, "mark_before_delete")["rows"][0]["at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        as_of <= incident && as_of <= marked,
        "{as_of} {marked} {incident}"
    );
    let newest_before_mark: jiff::Timestamp = db
        .psql(
            "orders",
            &format!("select to_char(max(at) at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') from orders where at <= '{marked}'"),
        )
        .parse()
        .unwrap();
    assert!(newest_before_mark <= as_of, "{newest_before_mark} {as_of}");
    let rpo = rep["rpo_ms"].as_u64().unwrap() as i64;
    assert_eq!(
        rpo,
        incident.as_millisecond() - as_of.as_millisecond(),
        "{rep}"
    );
    let html = std::fs::read_to_string(sb.path("report.html")).unwrap();
    no_secret_anywhere(&sb, &[&r.stdout, &r.stderr, &html]);
}

#[test]
fn what_can_be_known_before_stopping_the_cluster_is_refused_before() {
    let pitr = Pitr::start();
    let sb = Sandbox::new();
    let file = pitr_runbook();
    let r = full_backup(&sb, &pitr);
    let stopped_at = sb.outputs(&r.run_id(), "full")["stopped_at"]
        .as_str()
        .unwrap()
        .to_string();
    let before: jiff::Timestamp = stopped_at.parse().unwrap();
    let early = (before - jiff::SignedDuration::from_secs(3600)).to_string();
    let late = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3600)).to_string();

    let refused = |extra: &[&str], env: &[(&str, &str)], says: &str| {
        let args = pitr.pitr_args(&["run", &file, "--yes"], extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut all = pitr.env();
        for (k, v) in env {
            all.retain(|(n, _)| n != k);
            all.push((k, v.to_string()));
        }
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = sb.lifeboat_env(&args, &all);
        assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
        let run = r.run_id();
        let failure = sb.failure(&run);
        assert!(failure.contains(says), "{failure}");
        assert!(
            !sb.trace(&run)
                .iter()
                .any(|t| t == "step_started:stop_cluster"),
            "the cluster was stopped"
        );
        assert_eq!(
            pitr.pg.psql("orders", "select count(*) > 0 from orders"),
            "t"
        );
        no_secret_anywhere(&sb, &[&r.stdout, &r.stderr]);
    };
    let target = |t: &str| format!("target_time={t}");
    refused(
        &[&target(&early)],
        &[],
        "before the end of the oldest backup",
    );
    refused(
        &[&target(&late)],
        &[],
        "after the newest WAL in the archive",
    );
    refused(
        &[&target(&stopped_at), "stanza=nope"],
        &[],
        "stanza `nope` is not in the configuration",
    );
    refused(
        &[&target(&stopped_at)],
        &[("PGBACKREST_REPO1_CIPHER_PASS", "not-the-passphrase")],
        "do not decrypt",
    );
    refused(&[], &[], "params.target_time != ''");
    // Archiving that does not work.
    pitr.pg
        .psql("postgres", "alter system set archive_command = 'false'");
    pitr.pg.psql("postgres", "select pg_reload_conf()");
    refused(&[&target(&stopped_at)], &[], "pgbackrest check failed");
}

#[test]
fn the_readiness_runbook_fails_when_archiving_stops() {
    let pitr = Pitr::start();
    let sb = Sandbox::new();
    sb.write(
        "b.yaml",
        &pitr.runbook("pitr-base", "", "  - {id: full, action: pgbackrest.backup, with: {connection: repo, type: full}}\n  - {id: idle, action: wait, needs: [full], with: {for: 3s}}\n  - {id: stale, action: pgbackrest.info, needs: [idle], with: {connection: repo, max_wal_age: 1s}}\n"),
    );
    let file = root()
        .join("runbooks/postgres-pitr-readiness.yaml")
        .display()
        .to_string();
    let config = format!("pgbackrest_config={}", pitr.config.display());
    let owner = format!("os_user={}", crate::common::pgbackrest::owner());
    let ready = || lifeboat(&sb, &pitr, &["run", &file, "-p", &config, "-p", &owner]);
    // No backup yet: not ready.
    let r = ready();
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        sb.failure(&r.run_id()).contains("no valid backup"),
        "{}",
        sb.failure(&r.run_id())
    );
    let r = lifeboat(&sb, &pitr, &["run", "b.yaml", "--yes"]);
    // The backup's WAL is older than a second by the time `stale` reads it.
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        sb.failure(&r.run_id()).contains("more than max_wal_age 1s"),
        "{}",
        sb.failure(&r.run_id())
    );
    let r = ready();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let exposure = sb.outputs(&r.run_id(), "exposure");
    assert!(
        exposure["wal_age_seconds"].as_i64().unwrap() < 900,
        "{exposure}"
    );
    let metrics = lifeboat(&sb, &pitr, &["metrics"]).stdout;
    assert!(
        metrics.contains("lifeboat_recovery_point_timestamp_seconds{runbook=\"postgres-pitr-readiness\",step=\"exposure\",of=\"wal\"}"),
        "{metrics}"
    );
    // Archiving breaks: the next check says so.
    pitr.pg
        .psql("postgres", "alter system set archive_command = 'false'");
    pitr.pg.psql("postgres", "select pg_reload_conf()");
    let r = ready();
    assert_eq!(r.code, 1);
    assert!(
        sb.failure(&r.run_id()).contains("pgbackrest check failed"),
        "{}",
        sb.failure(&r.run_id())
    );
}

#[test]
fn the_plan_shows_the_target_resolved_and_the_restore_destructive() {
    let sb = Sandbox::new();
    let file = root()
        .join("runbooks/postgres-pitr.yaml")
        .display()
        .to_string();
    let r = sb.lifeboat(&["plan", &file, "-p", "target_time=2026-11-30T14:02:30Z"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let restore = r
        .stdout
        .split("restore (pgbackrest.restore)")
        .nth(1)
        .unwrap();
    assert!(
        restore.starts_with("  [DESTRUCTIVE, NOT REVERSIBLE]"),
        "{restore}"
    );
    assert!(
        restore.contains("to time 2026-11-30T14:02:30Z"),
        "{restore}"
    );
}

/// The PITR run killed (SIGKILL) while pgBackRest restores, resumed, killed again while the
/// recovered cluster starts, then resumed to the same recovered data: `resume` finishes it.
#[test]
fn a_pitr_killed_while_restoring_and_while_recovering_resumes_to_the_target() {
    let pitr = Pitr::start();
    let sb = Sandbox::new();
    // Enough data that pgBackRest's restore takes a moment.
    pitr.pg.psql(
        "orders",
        "insert into orders (note) select repeat(md5(g::text), 8) from generate_series(1, 200000) g",
    );
    full_backup(&sb, &pitr);
    // pgBackRest restores only to times after the backup's end, in whole seconds.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    pitr.pg
        .psql("orders", "insert into orders (note) values ('kept')");
    let target = pitr.pg.psql(
        "orders",
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    pitr.pg
        .psql("orders", "delete from orders where id % 3 = 0");

    let file = pitr_runbook();
    let args = pitr.pitr_args(
        &["run", &file, "--yes"],
        &[&format!("target_time={target}")],
    );
    let env = pitr.env();
    // Starts lifeboat and kills it once the restore step reports `progress`.
    let kill_at = |args: &[String], progress: &str| -> String {
        let mut c = sb.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        for (k, v) in &env {
            c.env(k, v);
        }
        let mut child = c
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let runs = sb.path(".lifeboat/runs");
        let mut seen = false;
        for _ in 0..1200 {
            seen = walkdir::WalkDir::new(&runs)
                .into_iter()
                .flatten()
                .filter(|e| e.file_name() == "log.jsonl")
                .any(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .lines()
                        .any(|l| {
                            l.contains("\"step_progress\"")
                                && l.contains("\"step\":\"restore\"")
                                && l.contains(progress)
                        })
                });
            if seen {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(seen, "the restore never reported `{progress}`: {stderr}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let id = kill_at(&args, "restoring to");
    let resume: Vec<String> = vec!["resume".into(), id.clone(), "--yes".into()];
    let again = kill_at(&resume, "starting the cluster");
    assert_eq!(again, id, "resume continues the same run");
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = sb.lifeboat_env(&["resume", &id, "--yes"], &env_ref);
    assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
    // The last attempt found the restore noted, and only started the cluster and waited.
    assert!(
        sb.events(&id).iter().any(|e| e["event"] == "step_progress"
            && e["message"]
                .as_str()
                .unwrap_or_default()
                .contains("done by an earlier attempt")),
        "the restore ran again after it was noted"
    );
    // Every row is back: the delete came after the target.
    assert_eq!(
        pitr.pg.psql("orders", "select count(*) from orders"),
        "201001"
    );
    assert_eq!(
        pitr.pg
            .psql("orders", "select count(*) from orders where note = 'kept'"),
        "1"
    );
    assert_eq!(pitr.pg.psql("orders", "select pg_is_in_recovery()"), "f");
}
