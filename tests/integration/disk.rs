//! A state store on a disk that fills up: at every point of a run (creating it, mid-run, at
//! its end) lifeboat exits 0 or 5, leaves no temporary file, and leaves a log that verifies and
//! a run that `resume` finishes once there is room again.

use crate::common::sandbox::{Sandbox, runbook};
use crate::common::small_disk;

const DISK_KIB: u32 = 256;

/// Four steps of about 3 KiB of output each: the log grows by about a page per step.
fn steps() -> String {
    let step = |id: &str, need: Option<&str>| {
        let needs = need.map(|n| format!(", needs: [{n}]")).unwrap_or_default();
        format!(
            "  - {{id: {id}, action: shell{needs}, with: {{script: 'head -c 3000 /dev/zero | tr \"\\\\0\" {id}; echo {id} >> side.txt', idempotent: true}}}}\n"
        )
    };
    format!(
        "steps:\n{}{}{}{}",
        step("a", None),
        step("b", Some("a")),
        step("c", Some("b")),
        step("d", Some("c"))
    )
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_full_disk_at_any_point_exits_5_leaves_no_stray_file_and_resume_finishes() {
    let sb = Sandbox::new();
    let disk = sb.path("disk");
    std::fs::create_dir(&disk).unwrap();
    small_disk::mount(&disk, DISK_KIB);
    sb.write("disk/r.yaml", &runbook("full", &steps()));
    let state = disk.join("state");
    let mut seen = std::collections::BTreeSet::new();
    // From no free page up: the disk fills while the run is created, then mid-run, then never.
    for free_kib in (0..=40).step_by(4) {
        let _ = std::fs::remove_dir_all(&state);
        let _ = std::fs::remove_file(sb.path("side.txt"));
        let filler = disk.join("filler");
        let _ = std::fs::remove_file(&filler);
        let used: u64 = files(&disk).len() as u64 * 4;
        let fill = (DISK_KIB as u64).saturating_sub(free_kib + used) * 1024;
        // Best effort: a write that does not fit fills what is left.
        let _ = std::fs::write(&filler, vec![0u8; fill as usize]);
        let r = sb.lifeboat(&["run", "disk/r.yaml", "--state", "disk/state"]);
        let at = format!("{free_kib} KiB free");
        assert!(
            r.code == 0 || r.code == 5,
            "{at}: exit {}: {}",
            r.code,
            r.stderr
        );
        let stray: Vec<String> = files(&state)
            .into_iter()
            .filter(|f| f.contains(".tmp") || f.contains(".new-"))
            .collect();
        assert!(stray.is_empty(), "{at}: {stray:?}");
        std::fs::remove_file(&filler).unwrap();
        let runs = sb.lifeboat(&["runs", "--json", "--state", "disk/state"]);
        let runs: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap_or_default();
        let run = runs
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r["id"].as_str())
            .map(str::to_string);
        match (r.code, run) {
            (0, Some(id)) => {
                seen.insert("succeeded");
                let v = sb.lifeboat(&["verify", &id, "--state", "disk/state"]);
                assert_eq!(v.code, 0, "{at}: {}", v.stderr);
                assert_eq!(sb.read("side.txt"), "a\nb\nc\nd\n", "{at}");
            }
            (5, None) => {
                seen.insert("not created");
                assert!(r.stderr.contains("No space left"), "{at}: {}", r.stderr);
                assert_eq!(r.stdout, "", "{at}: no run id was given out");
            }
            (5, Some(id)) => {
                seen.insert("stopped mid-run");
                assert!(
                    r.stderr.contains("No space left")
                        && r.stderr.contains(&format!("lifeboat resume {id}")),
                    "{at}: {}",
                    r.stderr
                );
                let v = sb.lifeboat(&["verify", &id, "--state", "disk/state"]);
                assert_eq!(
                    v.code, 0,
                    "{at}: the log ends with a whole line: {}",
                    v.stderr
                );
                let resumed = sb.lifeboat(&["resume", &id, "--state", "disk/state"]);
                assert_eq!(resumed.code, 0, "{at}: {}", resumed.stderr);
                let v = sb.lifeboat(&["verify", &id, "--state", "disk/state"]);
                assert_eq!(v.code, 0, "{at}: {}", v.stderr);
                // Each step ran to the end, in order; one cut short ran again (idempotent).
                let mut side: Vec<String> = sb.read("side.txt").lines().map(String::from).collect();
                side.dedup();
                assert_eq!(side, ["a", "b", "c", "d"], "{at}");
            }
            (code, run) => panic!("{at}: exit {code} with run {run:?}: {}", r.stderr),
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["not created", "stopped mid-run", "succeeded"],
        "the sweep reached every phase of a run"
    );
}
