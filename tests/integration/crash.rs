//! The crash harness (scripts/crash-test) in miniature: runs killed with SIGKILL at random
//! moments, then resumed until they succeed, with the log and the side effects checked after
//! each. The full 100-run version is the script itself; its result is quoted in docs/executor.md.

use crate::common;

#[test]
fn runs_killed_at_random_moments_resume_to_success_without_running_a_completed_step_twice() {
    let out = std::process::Command::new("python3")
        .arg(common::root().join("scripts/crash-test"))
        .args(["--runs", "15", "--binary", env!("CARGO_BIN_EXE_lifeboat")])
        .output()
        .expect("python3 runs (scripts/setup-test-env installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("15 runs of 30 steps"), "{stdout}");
    assert!(stdout.contains("; 0 problems;"), "{stdout}");
}
