//! Child processes of actions: their own process group, ended with the attempt; the PostgreSQL
//! client tools found; files hashed.

use std::path::{Path, PathBuf};

use crate::actions::ActionError;

/// A child process's command. Every child lifeboat starts is made here, so none inherits a
/// secret: the variables of this process's secrets, and any holding a secret's value, are
/// removed from its environment (a step passes one on only through its own `env:`, set after).
/// It also carries the attempt it belongs to in [`ATTEMPT_VAR`], so that a later process can
/// find what is left of an attempt whose lifeboat was killed ([`end_orphans`]).
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    for var in crate::engine::secrets::kept_from_children() {
        cmd.env_remove(var);
    }
    if let Ok(key) = ATTEMPT.try_with(Clone::clone) {
        cmd.env(ATTEMPT_VAR, key);
    }
    cmd
}

/// This binary, to run a runbook as a child run (`action: runbook`). The one child that keeps
/// this process's environment: a child run resolves its own secrets from the environment the
/// operator gave this one, exactly as `lifeboat run` would, and masks them as this run does.
pub fn lifeboat() -> Result<std::process::Command, ActionError> {
    let exe = std::env::current_exe()
        .map_err(|e| ActionError::permanent(format!("cannot find the lifeboat binary: {e}")))?;
    Ok(std::process::Command::new(exe))
}

tokio::task_local! {
    /// The attempt key of the attempt this task runs, set by the engine around an action.
    pub static ATTEMPT: String;
}

/// The environment variable every child process of an attempt carries: the attempt's key
/// (`<run>/<step>/<n>`), which its own children inherit.
pub const ATTEMPT_VAR: &str = "LIFEBOAT_ATTEMPT_KEY";

/// What [`end_orphans`] found of one attempt and ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphans {
    pub attempt_key: String,
    /// Processes that carried the attempt's key.
    pub processes: usize,
    /// Their process groups, each ended whole.
    pub groups: Vec<i32>,
}

/// Ends what is left of attempts whose lifeboat died without ending them (`kill -9`, a power
/// cut spares nobody, but an OOM kill does): every process carrying one of `attempt_keys` in
/// [`ATTEMPT_VAR`], by its whole process group; TERM, then KILL after `grace`. Called by a
/// process that holds the run (so no live lifeboat is running those attempts), before it
/// decides anything about them. Reads `/proc`: processes of other users are seen only by root.
#[allow(unsafe_code)]
pub fn end_orphans(attempt_keys: &[String], grace: std::time::Duration) -> Vec<Orphans> {
    if attempt_keys.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    // SAFETY: getpgrp cannot fail.
    let my_group = unsafe { libc::getpgrp() };
    let mut found: Vec<Orphans> = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let key = environ.split(|&b| b == 0).find_map(|var| {
            let value = var
                .strip_prefix(ATTEMPT_VAR.as_bytes())?
                .strip_prefix(b"=")?;
            attempt_keys.iter().find(|k| k.as_bytes() == value)
        });
        let Some(key) = key else { continue };
        let Some(pgid) = group_of(pid) else { continue };
        if pgid == my_group || pgid <= 1 {
            continue;
        }
        match found.iter_mut().find(|o| &o.attempt_key == key) {
            Some(o) => {
                o.processes += 1;
                if !o.groups.contains(&pgid) {
                    o.groups.push(pgid);
                }
            }
            None => found.push(Orphans {
                attempt_key: key.clone(),
                processes: 1,
                groups: vec![pgid],
            }),
        }
    }
    let groups: Vec<i32> = found.iter().flat_map(|o| o.groups.clone()).collect();
    for &g in &groups {
        // SAFETY: killpg only sends a signal; a group already gone fails with ESRCH.
        unsafe { libc::killpg(g, libc::SIGTERM) };
    }
    let alive = |g: &i32| {
        // SAFETY: signal 0 only checks whether the group still exists.
        unsafe { libc::killpg(*g, 0) == 0 }
    };
    let until = std::time::Instant::now() + grace;
    while groups.iter().any(alive) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for g in groups.iter().filter(|g| alive(g)) {
        // SAFETY: as above.
        unsafe { libc::killpg(*g, libc::SIGKILL) };
    }
    found
}

/// A process's group, from `/proc/<pid>/stat` (the fifth field, after the parenthesised name,
/// which may itself hold spaces and parentheses).
fn group_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(2)?.parse().ok()
}

/// Ends the command's whole process group when the attempt is dropped: on timeout, on cancel,
/// on a second Ctrl-C. TERM first; KILL a few seconds later for whatever ignored it (the process
/// waits for that in [`reap`] before it exits, or a child that ignores TERM would outlive it).
pub struct GroupGuard(Option<i32>);

impl GroupGuard {
    pub fn new(pid: Option<i32>) -> GroupGuard {
        GroupGuard(pid)
    }

    /// The command ended by itself: whatever it left running on purpose (a daemon) stays.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let Some(pgid) = self.0.take() else { return };
        // SAFETY: killpg only sends a signal; a stale group id fails with ESRCH.
        unsafe { libc::killpg(pgid, libc::SIGTERM) };
        let ending = std::thread::spawn(move || {
            for _ in 0..30 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                // SAFETY: signal 0 only checks whether the group still exists.
                if unsafe { libc::killpg(pgid, 0) } != 0 {
                    return;
                }
            }
            // SAFETY: as above.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        });
        let mut threads = ENDING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        threads.retain(|t| !t.is_finished());
        threads.push(ending);
    }
}

/// Process groups being ended, each by a thread that returns within about three seconds.
static ENDING: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Waits until every process group a dropped attempt was ending is gone. Called once before
/// the process exits.
pub fn reap() {
    let ending = std::mem::take(
        &mut *ENDING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for thread in ending {
        let _ = thread.join();
    }
}

/// What a tool printed, and how it ended.
pub struct Captured {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a command to completion in its own process group (ended if the attempt is dropped),
/// stdin closed, stdout and stderr captured. Only failing to start or to wait is an error.
pub async fn capture(cmd: std::process::Command, name: &str) -> Result<Captured, ActionError> {
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    let child = cmd
        .spawn()
        .map_err(|e| ActionError::permanent(format!("cannot start {name}: {e}")))?;
    let guard = GroupGuard::new(child.id().map(|p| p as i32));
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| ActionError::transient(format!("waiting for {name}: {e}")))?;
    guard.disarm();
    Ok(Captured {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs a tool to completion in its own process group; stderr (its tail) goes into the error.
pub async fn run_tool(
    program: &Path,
    args: &[String],
    env: &[(&'static str, String)],
) -> Result<String, ActionError> {
    let mut cmd = command(program);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let name = program.file_name().map_or_else(
        || program.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let out = capture(cmd, &name).await?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let tail = tail(&out.stderr, 6);
    let msg = format!("{name} failed ({}): {tail}", out.status);
    // A connection that broke is worth another attempt; anything else the tool reports is not.
    if tail.contains("could not connect")
        || tail.contains("connection to server")
        || tail.contains("server closed the connection")
    {
        Err(ActionError::transient(msg))
    } else {
        Err(ActionError::permanent(msg))
    }
}

/// A command run as another operating-system user (a cluster's owner): as is when that is this
/// process's own user, through `runuser` when this is root, else `sudo -n` keeping the variables
/// named in `keep_env` (sudo resets the environment). Starts in `/`, which every user may enter.
pub fn command_as(
    os_user: Option<&str>,
    program: impl AsRef<std::ffi::OsStr>,
    keep_env: &[String],
) -> Result<std::process::Command, ActionError> {
    let euid = rustix::process::geteuid().as_raw();
    let mut cmd = match os_user {
        None => command(program),
        Some(user) => {
            let uid = uid_of(user)?;
            if uid == euid {
                command(program)
            } else if euid == 0 {
                let mut c = command("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            } else {
                let mut c = command("sudo");
                c.arg("-n");
                // The attempt's key too, so that its orphans can be found (`end_orphans`). Only
                // beside variables the step needs: asking to keep any needs sudoers' leave.
                if !keep_env.is_empty() {
                    let keep: Vec<&str> = keep_env
                        .iter()
                        .map(String::as_str)
                        .chain([ATTEMPT_VAR])
                        .collect();
                    c.arg(format!("--preserve-env={}", keep.join(",")));
                }
                c.args(["-u", user, "--"]).arg(program);
                c
            }
        }
    };
    cmd.current_dir("/");
    Ok(cmd)
}

/// A user's id, from `/etc/passwd` (the accounts that own clusters are local ones).
fn uid_of(user: &str) -> Result<u32, ActionError> {
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| ActionError::permanent(format!("cannot read /etc/passwd: {e}")))?;
    passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((name, uid))
        })
        .find(|(name, _)| *name == user)
        .map(|(_, uid)| uid)
        .ok_or_else(|| {
            ActionError::permanent(format!(
                "there is no operating-system user `{user}` on this host (os_user)"
            ))
        })
}

/// A tool run from a blocking thread, its stdin or stdout piped to the caller: in its own process
/// group, which is ended if this is dropped before [`Piped::finish`], with its stderr read on a
/// thread of its own (a full stderr pipe would otherwise stall it).
pub struct Piped {
    pub child: std::process::Child,
    pub name: String,
    guard: GroupGuard,
    stderr: std::thread::JoinHandle<String>,
}

impl Piped {
    pub fn spawn(
        mut cmd: std::process::Command,
        stdin: std::process::Stdio,
        stdout: std::process::Stdio,
    ) -> Result<Piped, String> {
        use std::io::Read;
        use std::os::unix::process::CommandExt;
        let program = cmd.get_program().to_string_lossy().into_owned();
        let name = program.rsplit('/').next().unwrap_or(&program).to_string();
        cmd.stdin(stdin)
            .stdout(stdout)
            .stderr(std::process::Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let guard = GroupGuard::new(Some(child.id() as i32));
        let mut err = child.stderr.take().expect("piped");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Ok(Piped {
            child,
            name,
            guard,
            stderr,
        })
    }

    /// Waits for it: `Ok(None)` when it succeeded, `Ok(Some(why))` when it failed, with the last
    /// lines it wrote to stderr.
    pub fn finish(mut self) -> std::io::Result<Option<String>> {
        let status = self.child.wait()?;
        self.guard.disarm();
        let err_text = self.stderr.join().unwrap_or_default();
        Ok((!status.success())
            .then(|| format!("{} failed ({status}): {}", self.name, tail(&err_text, 4))))
    }
}

/// The last `n` lines of what a tool wrote to stderr, on one line.
pub fn tail(stderr: &str, n: usize) -> String {
    let lines: Vec<&str> = stderr.trim().lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// A PostgreSQL client tool: `$LIFEBOAT_PG_BIN/NAME`, else the newest
/// `/usr/lib/postgresql/*/bin/NAME` (Debian's layout), else `NAME` on the PATH.
pub fn pg_tool(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("LIFEBOAT_PG_BIN") {
        return PathBuf::from(dir).join(name);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let p = e.path().join("bin").join(name);
            p.exists().then_some((v, p))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map_or_else(|| PathBuf::from(name), |(_, p)| p)
}

/// SHA-256 (the raw digest) and size of a file, read in chunks.
pub fn sha256_file(path: &Path) -> std::io::Result<(Vec<u8>, u64)> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((h.finalize().to_vec(), size))
}
