//! A scratch folder with its own state store, and the real `lifeboat` binary run in it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The run id: the first line `run` prints.
    pub fn run_id(&self) -> String {
        self.stdout
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

impl From<Output> for Ran {
    fn from(o: Output) -> Ran {
        Ran {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_lifeboat"));
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("LIFEBOAT_OPERATOR")
            .env_remove("RUST_LOG")
            .env("USER", "tester")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    pub fn lifeboat(&self, args: &[&str]) -> Ran {
        self.lifeboat_env(args, &[])
    }

    pub fn lifeboat_env(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap().into()
    }

    pub fn log_path(&self, run: &str) -> PathBuf {
        self.dir
            .path()
            .join(".lifeboat/runs")
            .join(run)
            .join("log.jsonl")
    }

    /// The run's events, as JSON objects.
    pub fn events(&self, run: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.log_path(run))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The error the first `step_failed` in the run's log records.
    pub fn failure(&self, run: &str) -> String {
        let failed = self
            .events(run)
            .into_iter()
            .find(|e| e["event"] == "step_failed")
            .expect("a step failed");
        failed["error"].as_str().unwrap_or_default().to_string()
    }

    /// The outputs of `step`'s `step_succeeded` in the run's log.
    pub fn outputs(&self, run: &str, step: &str) -> serde_json::Value {
        self.events(run)
            .into_iter()
            .find(|e| e["event"] == "step_succeeded" && e["step"] == step)
            .unwrap_or_else(|| panic!("step {step} did not succeed in run {run}"))["outputs"]
            .clone()
    }

    /// `event` names in order, with their step when they have one: `step_started:a`.
    pub fn trace(&self, run: &str) -> Vec<String> {
        self.events(run)
            .iter()
            .map(|e| match e.get("step").and_then(|s| s.as_str()) {
                Some(s) => format!("{}:{s}", e["event"].as_str().unwrap()),
                None => e["event"].as_str().unwrap().to_string(),
            })
            .collect()
    }

    /// Waits until the file `name` exists and starts with `prefix`, polling every 50 ms at most
    /// `tries` times (then goes on: the assertions that follow say what went wrong).
    pub fn wait_for(&self, name: &str, prefix: &str, tries: u32) {
        for _ in 0..tries {
            if self.path(name).exists() && self.read(name).starts_with(prefix) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Starts `lifeboat ARGS`, SIGKILLs it (it alone, as `kill -9` would: what it started runs
    /// on) once `when` says, and returns the run id it printed; `None` when it was killed before
    /// the run was recorded.
    pub fn killed(&self, args: &[&str], when: Kill<'_>) -> Option<String> {
        let mut child = self
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        match when {
            Kill::Once(file) => self.wait_for(file, "", 200),
            Kill::After(d) => std::thread::sleep(d),
        }
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(String::from)
    }

    /// SIGKILLs the process group whose id a shell step wrote to `pgid` (`echo $$ > pgid`).
    #[allow(unsafe_code)]
    pub fn kill_group(&self) {
        let pgid: i32 = self.read("pgid").trim().parse().unwrap();
        // SAFETY: signalling a process group the test started.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }
}

/// When [`Sandbox::killed`] kills lifeboat.
pub enum Kill<'a> {
    /// Once a step has written this file.
    Once(&'a str),
    /// After this long.
    After(std::time::Duration),
}

/// A moment between `from` and `from + span`, different in each test run: where a kill lands.
pub fn random_moment(from: std::time::Duration, span_ms: u32) -> std::time::Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    from + std::time::Duration::from_millis(u64::from(nanos % span_ms.max(1)))
}

pub fn runbook(name: &str, rest: &str) -> String {
    format!(
        "apiVersion: lifeboat/v1\nkind: Runbook\nmetadata: {{name: {name}, version: 1.0.0}}\n{rest}"
    )
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
