//! `pgbackrest.*`: physical backups, WAL archiving and point-in-time recovery through
//! pgBackRest, which moves the bytes; lifeboat decides, records and measures. The client here
//! runs the `pgbackrest` command as the connection says (stanza, configuration, repository,
//! operating-system user), with the repository's secrets in its environment, never on its
//! command line, and turns what it prints into typed values and clear errors.

pub mod backup;
pub mod check;
pub mod expire;
pub mod info;
pub mod restore;
pub mod verify;

use serde::Deserialize;
use serde_json::Value;

use crate::actions::support::process::{Captured, capture, command_as};
use crate::actions::{ActionError, ConnectionUse, Exec};
use crate::runbook::ConnectionKind;

pub const KINDS: &[ConnectionKind] = &[ConnectionKind::Pgbackrest];

pub fn the_connection(name: &str) -> Vec<ConnectionUse<'_>> {
    crate::actions::support::the_connection(name, KINDS)
}

/// A `pgbackrest` connection, rendered.
#[derive(Debug, Clone)]
pub struct Pgbr {
    pub stanza: String,
    config: Option<String>,
    repo: Option<u8>,
    os_user: Option<String>,
    /// `PGBACKREST_REPO<n>_...` variables holding the connection's secrets.
    env: Vec<(String, String)>,
}

impl Pgbr {
    pub fn from_exec(cx: &Exec<'_>, name: &str) -> Result<Pgbr, ActionError> {
        let fields = (cx.connection)(name).map_err(ActionError::permanent)?;
        Pgbr::from_fields(name, &fields)
    }

    fn from_fields(name: &str, fields: &Value) -> Result<Pgbr, ActionError> {
        let get = |k: &str| crate::runbook::connection_field(fields, k);
        let stanza = get("stanza")
            .ok_or_else(|| ActionError::permanent(format!("connection `{name}` has no stanza")))?;
        let repo = match fields.get("repo") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(|| {
                        ActionError::permanent(format!(
                            "connection `{name}`: repo must be a number from 1 to 256"
                        ))
                    })? as u8,
            ),
        };
        let n = repo.unwrap_or(1);
        let mut env = Vec::new();
        for (field, option) in [
            ("cipher_pass", "CIPHER_PASS"),
            ("s3_key", "S3_KEY"),
            ("s3_key_secret", "S3_KEY_SECRET"),
        ] {
            if let Some(v) = get(field) {
                env.push((format!("PGBACKREST_REPO{n}_{option}"), v));
            }
        }
        Ok(Pgbr {
            stanza,
            config: get("config"),
            repo,
            os_user: get("os_user"),
            env,
        })
    }

    /// The repository's number in `--repo<n>-...` options.
    pub fn repo_index(&self) -> u8 {
        self.repo.unwrap_or(1)
    }

    /// The arguments every command gets: which stanza, configuration and repository, and
    /// logging that lifeboat reads (errors on stderr; `console` on stdout).
    fn args(&self, command: &str, console: &str) -> Vec<String> {
        let mut a = vec![format!("--stanza={}", self.stanza)];
        if let Some(c) = &self.config {
            a.push(format!("--config={c}"));
        }
        if let Some(r) = self.repo {
            a.push(format!("--repo={r}"));
        }
        a.push(format!("--log-level-console={console}"));
        a.push("--log-level-stderr=error".into());
        a.push(command.into());
        a
    }

    async fn spawn(&self, args: Vec<String>) -> Result<Captured, ActionError> {
        let keep: Vec<String> = self.env.iter().map(|(k, _)| k.clone()).collect();
        let mut cmd = command_as(self.os_user.as_deref(), pgbackrest_program(), &keep)?;
        cmd.args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        capture(cmd, "pgbackrest").await
    }

    /// Runs a command with `options` after it; returns what it logged at `info` (stdout).
    pub async fn run(&self, command: &str, options: &[String]) -> Result<String, ActionError> {
        let mut args = self.args(command, "info");
        args.extend(options.iter().cloned());
        let out = self.spawn(args).await?;
        if out.status.success() {
            return Ok(out.stdout);
        }
        let mut e = failure(command, &out);
        // A stanza the configuration does not describe: pgBackRest asks for its pg1-path.
        if e.message.contains("requires option: pg1-path") {
            e.message = format!(
                "stanza `{}` is not in the configuration ({}): pgBackRest knows no cluster for it; check the connection's stanza and config",
                self.stanza,
                self.config.as_deref().unwrap_or("pgBackRest's default")
            );
        }
        Err(e)
    }

    /// `info --output=json` for the stanza, refused with a clear sentence unless the stanza
    /// exists and the repository could be read.
    pub async fn info(&self) -> Result<StanzaInfo, ActionError> {
        let mut args = self.args("info", "off");
        args.push("--output=json".into());
        let out = self.spawn(args).await?;
        if !out.status.success() {
            return Err(failure("info", &out));
        }
        // A file that did not decrypt is quoted in the status message as raw bytes, control
        // characters and all, which is not JSON: blank them (JSON's own escapes are untouched).
        let text: String = out
            .stdout
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut all: Vec<StanzaInfo> = serde_json::from_str(&text).map_err(|e| {
            ActionError::permanent(format!(
                "pgbackrest info printed JSON lifeboat cannot read: {e}"
            ))
        })?;
        let info = all.pop().ok_or_else(|| {
            ActionError::permanent(format!("pgbackrest info knows no stanza `{}`", self.stanza))
        })?;
        match info.status.code {
            // 2: no valid backups, which `info` reports and `restore` refuses itself.
            0 | 2 => Ok(info),
            1 => Err(ActionError::permanent(format!(
                "stanza `{}` does not exist in the repository (pgBackRest: {}): check the connection's stanza and config, or create it with `pgbackrest stanza-create`",
                self.stanza, info.status.message
            ))),
            _ => {
                let why = info
                    .repo
                    .iter()
                    .find(|r| r.status.code != 0)
                    .map_or(info.status.message.as_str(), |r| r.status.message.as_str());
                Err(explain(why))
            }
        }
    }

    /// When the newest WAL segment in the archive was stored: the repository's time of the
    /// file (`repo-ls`). Data committed after it is not recoverable yet.
    pub async fn newest_wal_at(
        &self,
        info: &StanzaInfo,
    ) -> Result<Option<jiff::Timestamp>, ActionError> {
        let Some(archive) = info.archive.last() else {
            return Ok(None);
        };
        let Some(max) = archive.max.as_deref() else {
            return Ok(None);
        };
        let dir = format!(
            "archive/{}/{}/{}",
            self.stanza,
            archive.id,
            max.get(..16).unwrap_or(max)
        );
        let mut args = self.args("repo-ls", "off");
        args.push("--output=json".into());
        args.push(dir);
        let out = self.spawn(args).await?;
        if !out.status.success() {
            return Err(failure("repo-ls", &out));
        }
        let listing: serde_json::Map<String, Value> =
            serde_json::from_str(&out.stdout).map_err(|e| {
                ActionError::permanent(format!(
                    "pgbackrest repo-ls printed JSON lifeboat cannot read: {e}"
                ))
            })?;
        let newest = listing
            .iter()
            .filter(|(name, _)| name.starts_with(max))
            .filter_map(|(_, v)| v.get("time").and_then(Value::as_i64))
            .max();
        Ok(newest.and_then(|s| jiff::Timestamp::from_second(s).ok()))
    }
}

/// The `pgbackrest` program: `$LIFEBOAT_PGBACKREST`, else the one on the PATH.
fn pgbackrest_program() -> std::ffi::OsString {
    std::env::var_os("LIFEBOAT_PGBACKREST").unwrap_or_else(|| "pgbackrest".into())
}

/// A failed command as an error: pgBackRest's own error line, made readable.
fn failure(command: &str, out: &Captured) -> ActionError {
    let text = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    let mut e = explain(text);
    e.message = format!(
        "pgbackrest {command} failed ({}): {}",
        out.status, e.message
    );
    e
}

/// What pgBackRest said, as a sentence a person under pressure can act on, and whether another
/// attempt could help. Bytes of a file that did not decrypt are never repeated.
pub fn explain(said: &str) -> ActionError {
    let printable: String = said
        .chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect();
    let first = printable
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no message")
        .trim_start_matches("ERROR: ")
        .to_string();
    let has = |s: &str| printable.contains(s);
    if has("key/value found outside of section")
        || has("CryptoError") && has("unable to") && !has("certificate") && !has("hostname")
    {
        return ActionError::permanent(
            "the repository's files do not decrypt: the passphrase (the connection's `cipher_pass`, or `repo-cipher-pass` in the configuration) is wrong, or the repository is not encrypted as the configuration says",
        );
    }
    let hints: Vec<&str> = printable
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("HINT:"))
        .take(2)
        .collect();
    let mut message = first.chars().take(400).collect::<String>();
    for h in hints {
        message.push_str(" (");
        message.push_str(h);
        message.push(')');
    }
    // Errors another attempt can get past: a host that did not answer, a lock another
    // pgBackRest holds, an object store's server error.
    let transient = [
        "[049]",
        "[050]",
        "[104]",
        "HostConnectError",
        "LockAcquireError",
        "unable to acquire lock",
        "timeout",
    ]
    .iter()
    .any(|s| has(s));
    ActionError {
        message,
        transient,
        exit_code: None,
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct StanzaInfo {
    pub status: Status,
    #[serde(default)]
    pub backup: Vec<BackupInfo>,
    #[serde(default)]
    pub archive: Vec<ArchiveInfo>,
    #[serde(default)]
    pub repo: Vec<RepoInfo>,
    #[serde(default)]
    pub cipher: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Status {
    pub code: i64,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RepoInfo {
    pub status: Status,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ArchiveInfo {
    pub id: String,
    pub min: Option<String>,
    pub max: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BackupInfo {
    pub label: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: Span<i64>,
    pub lsn: Option<Span<String>>,
    pub archive: Option<Span<Option<String>>>,
    pub info: Sizes,
    #[serde(default)]
    pub error: Option<bool>,
    #[serde(default)]
    pub prior: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Span<T> {
    pub start: T,
    pub stop: T,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Sizes {
    pub size: u64,
    pub delta: u64,
    pub repository: RepoSizes,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RepoSizes {
    pub size: u64,
    pub delta: u64,
}

pub fn at(unix: i64) -> String {
    jiff::Timestamp::from_second(unix).map_or_else(|_| unix.to_string(), |t| t.to_string())
}

impl BackupInfo {
    /// The backup as outputs: what a runbook reads and a reviewer sees in the log.
    pub fn outputs(&self) -> Value {
        serde_json::json!({
            "label": self.label,
            "type": self.kind,
            "started_at": at(self.timestamp.start),
            "stopped_at": at(self.timestamp.stop),
            "lsn_start": self.lsn.as_ref().map(|l| l.start.clone()),
            "lsn_stop": self.lsn.as_ref().map(|l| l.stop.clone()),
            "wal_start": self.archive.as_ref().and_then(|a| a.start.clone()),
            "wal_stop": self.archive.as_ref().and_then(|a| a.stop.clone()),
            "size_bytes": self.info.size,
            "delta_bytes": self.info.delta,
            "repo_size_bytes": self.info.repository.size,
            "repo_delta_bytes": self.info.repository.delta,
            "prior": self.prior,
        })
    }
}

/// Why a time cannot be recovered to with what the repository holds: before the end of the
/// oldest backup, or after the newest archived WAL. `None`: it can, as far as can be known
/// before trying.
pub fn unreachable_time(
    info: &StanzaInfo,
    newest_wal: Option<jiff::Timestamp>,
    t: jiff::Timestamp,
) -> Option<String> {
    let valid: Vec<&BackupInfo> = info
        .backup
        .iter()
        .filter(|b| b.error != Some(true))
        .collect();
    let Some(oldest) = valid.iter().min_by_key(|b| b.timestamp.stop) else {
        return Some("the repository holds no valid backup to recover from".into());
    };
    // pgBackRest picks a backup that stopped strictly before the target, in whole seconds.
    if t.as_second() <= oldest.timestamp.stop {
        return Some(format!(
            "{t} is before the end of the oldest backup ({}, finished {}): the repository cannot recover to it; the earliest time it can is {}",
            oldest.label,
            at(oldest.timestamp.stop),
            at(oldest.timestamp.stop + 1)
        ));
    }
    // The repository keeps whole seconds: a segment stored at 14:02:30 may hold commits until
    // 14:02:30.999.
    match newest_wal {
        Some(w) if t.as_second() > w.as_second() => Some(format!(
            "{t} is after the newest WAL in the archive (stored {w}): recovery would end before reaching it; is archiving working (`pgbackrest.check`)?"
        )),
        None => Some("the archive holds no WAL: no time can be recovered to".into()),
        _ => None,
    }
}

/// A target time as pgBackRest and PostgreSQL both read it: `YYYY-MM-DD HH:MM:SS.ffffff+00`.
pub fn target_time_text(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}

/// Parses a time a runbook gives (RFC 3339, or PostgreSQL's `2026-11-30 14:02:30+00`).
pub fn parse_time(s: &str) -> Result<jiff::Timestamp, String> {
    s.trim()
        .parse::<jiff::Timestamp>()
        .or_else(|_| s.trim().replacen(' ', "T", 1).parse::<jiff::Timestamp>())
        .or_else(|_| format!("{}:00", s.trim().replacen(' ', "T", 1)).parse::<jiff::Timestamp>())
        .map_err(|_| {
            format!("`{s}` is not a time with a zone, such as 2026-11-30T14:02:30Z or 2026-11-30 14:02:30+00")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_go_in_the_environment_of_the_right_repository() {
        let p = Pgbr::from_fields(
            "repo",
            &json!({"stanza": "main", "repo": 2, "cipher_pass": "pw", "s3_key_secret": "sk", "s3_key": ""}),
        )
        .unwrap();
        assert_eq!(
            p.env,
            vec![
                ("PGBACKREST_REPO2_CIPHER_PASS".to_string(), "pw".to_string()),
                (
                    "PGBACKREST_REPO2_S3_KEY_SECRET".to_string(),
                    "sk".to_string()
                ),
            ]
        );
        let args = p.args("info", "off");
        assert!(
            !args.iter().any(|a| a.contains("pw") || a.contains("sk")),
            "{args:?}"
        );
        assert_eq!(
            args[..2],
            ["--stanza=main".to_string(), "--repo=2".to_string()]
        );
    }

    #[test]
    fn a_wrong_passphrase_is_named_and_its_garbage_not_repeated() {
        let e = explain(
            "[FormatError] unable to load info file '/pgbackrest/backup/main/backup.info':\nFormatError: key/value found outside of section at line 1: \u{1}\u{7f}xq\nHINT: has a stanza-create been performed?",
        );
        assert!(e.message.contains("passphrase"), "{e:?}");
        assert!(!e.message.contains("xq"));
        assert!(!e.transient);
        let e =
            explain("ERROR: [049]: unable to connect to '127.0.0.1:1': [111] Connection refused");
        assert!(e.transient);
        assert_eq!(
            e.message,
            "[049]: unable to connect to '127.0.0.1:1': [111] Connection refused"
        );
    }

    #[test]
    fn times_outside_the_repository_are_refused_with_the_range() {
        let info: StanzaInfo = serde_json::from_value(json!({
            "status": {"code": 0, "message": "ok"},
            "archive": [{"id": "15-1", "min": "000000010000000000000001", "max": "000000010000000000000009"}],
            "backup": [{"label": "20261130-100000F", "type": "full",
                "timestamp": {"start": 1796076000, "stop": 1796076060},
                "info": {"size": 1, "delta": 1, "repository": {"size": 1, "delta": 1}}}]
        }))
        .unwrap();
        let wal = jiff::Timestamp::from_second(1796079000).ok();
        let t = |s| jiff::Timestamp::from_second(s).unwrap();
        assert!(unreachable_time(&info, wal, t(1796077000)).is_none());
        let before = unreachable_time(&info, wal, t(1796070000)).unwrap();
        assert!(
            before.contains("before the end of the oldest backup (20261130-100000F"),
            "{before}"
        );
        let after = unreachable_time(&info, wal, t(1796080000)).unwrap();
        assert!(after.contains("after the newest WAL"), "{after}");
    }

    #[test]
    fn times_are_read_in_both_spellings_and_written_in_one() {
        let a = parse_time("2026-11-30T22:31:35.16458Z").unwrap();
        let b = parse_time("2026-11-30 22:31:35.16458+00").unwrap();
        assert_eq!(a, b);
        assert_eq!(target_time_text(a), "2026-11-30 22:31:35.164580+00");
        assert!(parse_time("yesterday").unwrap_err().contains("not a time"));
    }
}
