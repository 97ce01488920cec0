//! The actions. `family.verb` lives in `<family>/<verb>.rs`, holding its typed `with`, its outputs,
//! its effect, its dry-run description, its execution and its unit tests; what a family's actions
//! share (its client, error classification) is the family's `mod.rs`; what several families share
//! is in `support/`. The `actions!` list at the bottom of this file is the only place that names
//! them all; everything else (schema, validation, plan, `lifeboat actions`, the docs' tables)
//! goes through what it generates.

// Families. Actions without a family (`shell`, `wait`, `approval`) are in `local/`.
pub mod backup;
pub mod dns;
pub mod files;
pub mod http;
pub mod kubernetes;
pub mod local;
pub mod neo4j;
pub mod notify;
pub mod pgbackrest;
pub mod postgres;
pub mod s3;
pub mod support;

pub use postgres::tls_config;
pub use support::{Tpl, is_template};

/// Whether a value is not known yet: a template, or what a plan renders with a stand-in for a
/// run-time value (`backups/⟨steps.x.outputs.key⟩`).
pub fn unknown_yet(s: &str) -> bool {
    is_template(s) || s.contains('⟨')
}

use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::runbook::ConnectionKind;

/// What running an action does to the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Reads only: nothing to undo, so `compensate` makes no sense.
    ReadOnly,
    /// Changes state that a `compensate` step can change back.
    Changes,
    /// Changes state that cannot be changed back (a deleted object, a promoted replica).
    Irreversible,
}

/// Whether a rule about an action (it only reads; it is destructive) holds for a given `with`: as
/// code, which the engine and validation use, and in words, from which the docs, the help of
/// diagnostics and the error pages are generated. One rule, so they cannot drift apart.
pub enum When<A> {
    Never,
    Always,
    /// Holds when `test` does. `what` qualifies the action's name in a sentence: "`postgres.query`
    /// without `writes`".
    If {
        what: &'static str,
        test: fn(&A) -> bool,
    },
}

impl<A> When<A> {
    pub fn holds(&self, a: &A) -> bool {
        match self {
            When::Never => false,
            When::Always => true,
            When::If { test, .. } => test(a),
        }
    }

    fn words(&self) -> Rule {
        match self {
            When::Never => Rule::Never,
            When::Always => Rule::Always,
            When::If { what, .. } => Rule::If(what),
        }
    }
}

/// A [`When`] in words only, for lists and documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Never,
    Always,
    If(&'static str),
}

/// An output an action declares; templates may read it as `steps.<id>.outputs.<name>`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Output {
    pub name: &'static str,
    pub description: &'static str,
}

const fn out(name: &'static str, description: &'static str) -> Output {
    Output { name, description }
}

/// A connection a step's `with` names, for checking that it exists and is of the right kind.
#[derive(Debug, Clone)]
pub struct ConnectionUse<'a> {
    /// Pointer inside `with`, e.g. `/connection` or `/from/connection`.
    pub field: &'static str,
    pub name: &'a str,
    pub kinds: &'static [ConnectionKind],
}

/// A problem with a `with` that its type cannot express (one of two fields, a bad combination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithProblem {
    /// Pointer inside `with`; empty for `with` itself.
    pub field: String,
    pub message: String,
    pub code: crate::diagnostics::Code,
}

impl WithProblem {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> WithProblem {
        WithProblem {
            field: field.into(),
            message: message.into(),
            code: crate::diagnostics::Code::InvalidValue,
        }
    }

    /// Checks an optional duration field.
    pub fn duration(field: &str, d: Option<&crate::runbook::DurationText>) -> Option<WithProblem> {
        let d = d?;
        let err = match d.0.as_str() {
            Some(s) if is_template(s) => return None,
            Some(s) => crate::runbook::duration::parse(s).err()?,
            None => format!("expected a duration such as `30s`, found `{}`", d.0),
        };
        Some(WithProblem {
            field: field.into(),
            message: err,
            code: crate::diagnostics::Code::InvalidDuration,
        })
    }
}

/// A language a field of `with` is written in, where a value pasted in can become code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// A shell script: quote with `shell_quote`, or pass values as arguments or environment.
    Shell,
    /// SQL: pass values as bind parameters, or quote with `sql_literal` / `sql_ident`.
    Sql,
    /// Cypher: pass values as `$name` parameters (there is no quoting filter).
    Cypher,
}

/// What the dry-run description may know besides the step's own inputs.
pub trait DescribeContext {
    /// A short human label for a connection: `postgres orders_db (postgres://app@db:5432/orders)`.
    fn connection(&self, name: &str) -> String;
}

/// What a running action may use besides its inputs.
pub struct Exec<'a> {
    pub run_id: &'a str,
    pub step: &'a str,
    /// Unique per attempt and stable across a crash (it is in the run log before the attempt
    /// starts): actions pass it to the systems they touch as an idempotency key where they can.
    pub attempt_key: &'a str,
    pub http: &'a reqwest::Client,
    /// Evaluates an expression over `outputs` (and the run's params and step outputs).
    pub eval: &'a (dyn Fn(&str, &serde_json::Value) -> Result<bool, String> + Send + Sync),
    /// A named connection's fields, templates rendered (values from secrets are tainted and
    /// masked like any other).
    pub connection: &'a (dyn Fn(&str) -> Result<serde_json::Value, String> + Send + Sync),
    /// Reports where a long attempt stands; recorded as `step_progress`. Call it when the state
    /// changes, not on every poll: each call is a line in the run log.
    pub progress: &'a (dyn Fn(&str) + Send + Sync),
    /// Records a fact for this step durably (`step_noted`) and returns once it is on disk: call
    /// it before the change the fact is needed to undo.
    pub note: &'a (dyn Fn(&str, serde_json::Value) -> NoteFuture + Send + Sync),
    /// What an earlier attempt of this step (or of its compensation) noted under a key.
    pub recall: &'a (dyn Fn(&str) -> Option<serde_json::Value> + Send + Sync),
    /// What `action: runbook` needs of the run that calls it.
    pub calls: &'a Calls,
}

/// What a step that runs another runbook (`action: runbook`) needs of the run that calls it.
#[derive(Debug, Clone, Default)]
pub struct Calls {
    /// The folder of the calling runbook's file, absolute: where the files it names are.
    pub dir: Option<std::path::PathBuf>,
    /// The state store, as `--state` names it: a child run is recorded there too.
    pub state: Option<String>,
    /// `--yes`: a child run answers its gates the same way.
    pub yes: bool,
    /// `--grace`: a child run gives its steps the same time to finish when stopped.
    pub grace: Option<std::time::Duration>,
}

/// Owns what it needs ('static), so that `Exec` stays covariant in its lifetime.
pub type NoteFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ActionError>> + Send>>;

/// Why an attempt failed, and whether trying again could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionError {
    pub message: String,
    /// A timeout, a refused connection, a 503: another attempt may succeed. Only these are retried.
    pub transient: bool,
    /// The exit status of the process that failed (`shell`), which `retry.on_exit_codes` may
    /// declare transient or not instead of `transient`.
    pub exit_code: Option<i32>,
}

impl ActionError {
    pub fn transient(message: impl Into<String>) -> ActionError {
        ActionError {
            message: message.into(),
            transient: true,
            exit_code: None,
        }
    }
    pub fn permanent(message: impl Into<String>) -> ActionError {
        ActionError {
            message: message.into(),
            transient: false,
            exit_code: None,
        }
    }
}

pub type ActionResult = Result<serde_json::Value, ActionError>;
pub type PreviewFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, ActionError>> + Send + 'a>>;
pub type ActionFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = ActionResult> + Send + 'a>>;

/// Implemented by each action's `with` type.
pub trait ActionSpec: DeserializeOwned + JsonSchema + Sized {
    /// `family.verb`, the name used in `action:`.
    const NAME: &'static str;
    /// One line for `lifeboat actions`.
    const SUMMARY: &'static str;
    const OUTPUTS: &'static [Output];

    /// When the action only reads (nothing to undo; a drill may use it as a steady-state check).
    const READ_ONLY: When<Self>;
    /// What it does when it does not only read: `Changes`, or `Irreversible` when no
    /// `compensate` could change it back.
    const CHANGES: Effect = Effect::Changes;
    /// When a reviewer should look twice: data or service may be lost if it runs at the wrong time.
    const DESTRUCTIVE: When<Self>;

    fn effect(&self) -> Effect {
        if Self::READ_ONLY.holds(self) {
            Effect::ReadOnly
        } else {
            Self::CHANGES
        }
    }
    fn destructive(&self) -> bool {
        Self::DESTRUCTIVE.holds(self)
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        Vec::new()
    }
    /// Checks the type cannot express, of what the runbook says (validation).
    fn check(&self) -> Vec<WithProblem> {
        Vec::new()
    }
    /// The checks that hold of rendered values too, run by `plan` and before each attempt:
    /// all of [`ActionSpec::check`] unless a rule is about what an author may write (a literal
    /// empty list, say) rather than what the action may be given.
    fn check_rendered(&self) -> Vec<WithProblem> {
        self.check()
    }
    /// The fields of `with` that are code (a script, SQL), by pointer inside `with`: validation
    /// warns where a value is pasted into one unquoted.
    fn code(&self) -> Vec<(String, Language)> {
        Vec::new()
    }
    /// The dry run: exactly what the step would do, in words.
    fn describe(&self, cx: &dyn DescribeContext) -> String;

    /// Why this particular `with` cannot run in this version (a field whose support arrives
    /// later), checked before a run starts. `None`: it can.
    fn unsupported(&self) -> Option<String> {
        None
    }

    /// Whether this version of lifeboat can run the action. `run` refuses a runbook with any
    /// step it cannot run before anything starts, rather than failing halfway through.
    const RUNNABLE: bool = false;
    /// Whether running it twice has the effect of running it once, so an attempt interrupted by
    /// a crash can be run again without asking the operator.
    fn idempotent(&self) -> bool {
        self.effect() == Effect::ReadOnly
    }
    /// `plan --live`: what the step would change, read from the live system now, in words (the
    /// records a DNS failover replaces). Reads only; never notes, never writes. `None`: the
    /// action has nothing to read ahead.
    fn preview<'a>(&'a self, _cx: &'a Exec<'a>) -> Option<PreviewFuture<'a>> {
        None
    }
    /// Whether `preview` has anything to say: `plan --live` renders only these steps' inputs.
    const PREVIEWS: bool = false;
    /// The output (an RFC 3339 time) that says how recent the data this action brought back is:
    /// a restored backup's consistency point, a promoted replica's last replayed commit. A drill
    /// measures RPO from it.
    const RESTORED_AS_OF: Option<&'static str> = None;
    /// Outputs (RFC 3339 times) that say how recent the data a disaster now could be recovered
    /// to is, by what they measure (`wal`, `backup`): `lifeboat metrics` exposes the newest
    /// run's as `lifeboat_recovery_point_timestamp_seconds`, so an alert fires before the RPO
    /// is lost, not after.
    const RECOVERY_POINTS: &'static [(&'static str, &'static str)] = &[];
    /// The output (a count of bytes) that says how much a backup stored: `lifeboat metrics`
    /// exposes the newest successful run's as `lifeboat_backup_bytes`, for the alert on a
    /// backup much smaller than the ones before it.
    const STORED_BYTES: Option<&'static str> = None;

    /// Runs one attempt; returns the outputs as a JSON object. Dropping the future cancels it.
    fn execute<'a>(&'a self, _cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async {
            Err(ActionError::permanent(format!(
                "`{}` cannot run in this version of lifeboat",
                Self::NAME
            )))
        })
    }
}

/// An action's static facts, for documentation and checks that do not need a `with`.
#[derive(Debug, Clone)]
pub struct ActionInfo {
    pub name: &'static str,
    pub summary: &'static str,
    pub outputs: &'static [Output],
    pub with_schema: schemars::Schema,
    /// Name of the `with` type, used as its `$defs` entry in the runbook schema.
    pub schema_name: String,
    /// Whether this version can run it (all can be validated and planned).
    pub runnable: bool,
    pub read_only: Rule,
    /// What it does when it does not only read.
    pub changes: Effect,
    pub destructive: Rule,
}

fn info<A: ActionSpec>() -> ActionInfo {
    let settings = schemars::generate::SchemaSettings::draft2020_12();
    let generator = settings.into_generator();
    ActionInfo {
        name: A::NAME,
        summary: A::SUMMARY,
        outputs: A::OUTPUTS,
        with_schema: generator.into_root_schema_for::<A>(),
        schema_name: A::schema_name().into_owned(),
        runnable: A::RUNNABLE,
        read_only: A::READ_ONLY.words(),
        changes: A::CHANGES,
        destructive: A::DESTRUCTIVE.words(),
    }
}

/// The actions for which a rule holds, with its conditions, in the list's order:
/// "`wait`, `postgres.query` without `writes`, ...". Help texts and error pages are written
/// from it, so they name exactly the actions the code does.
pub fn in_words(rule: fn(&ActionInfo) -> Rule) -> String {
    catalog()
        .iter()
        .filter_map(|a| match rule(a) {
            Rule::Never => None,
            Rule::Always => Some(format!("`{}`", a.name)),
            Rule::If(what) => Some(format!("`{}` {what}", a.name)),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a `with` did not become a typed action.
#[derive(Debug, Clone)]
pub struct WithError {
    /// Pointer inside `with` where serde stopped.
    pub field: String,
    pub message: String,
}

fn parse_with<A: ActionSpec>(with: &serde_json::Value) -> Result<A, WithError> {
    serde_path_to_error::deserialize::<_, A>(with).map_err(|e| {
        let field = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .map(|s| format!("/{}", crate::diagnostics::escape_segment(&s)))
            .collect();
        WithError {
            field,
            message: e.into_inner().to_string(),
        }
    })
}

macro_rules! actions {
    ($($variant:ident => $family:ident :: $verb:ident :: $ty:ident,)*) => {

        /// A step's action with its typed `with`.
        #[derive(Debug, Clone)]
        pub enum Action {
            $($variant($family::$verb::$ty),)*
        }

        impl Action {
            /// Types `with` for the named action. `Ok(None)`: no such action.
            pub fn parse(name: &str, with: &serde_json::Value) -> Result<Option<Action>, WithError> {
                $(if name == <$family::$verb::$ty as ActionSpec>::NAME {
                    return parse_with::<$family::$verb::$ty>(with).map(|a| Some(Action::$variant(a)));
                })*
                Ok(None)
            }

            pub fn name(&self) -> &'static str {
                match self { $(Action::$variant(_) => <$family::$verb::$ty as ActionSpec>::NAME,)* }
            }
            pub fn outputs(&self) -> &'static [Output] {
                match self { $(Action::$variant(_) => <$family::$verb::$ty as ActionSpec>::OUTPUTS,)* }
            }
            pub fn effect(&self) -> Effect {
                match self { $(Action::$variant(a) => a.effect(),)* }
            }
            pub fn destructive(&self) -> bool {
                match self { $(Action::$variant(a) => a.destructive(),)* }
            }
            pub fn connections(&self) -> Vec<ConnectionUse<'_>> {
                match self { $(Action::$variant(a) => a.connections(),)* }
            }
            pub fn check(&self) -> Vec<WithProblem> {
                match self { $(Action::$variant(a) => a.check(),)* }
            }
            pub fn check_rendered(&self) -> Vec<WithProblem> {
                match self { $(Action::$variant(a) => a.check_rendered(),)* }
            }
            pub fn code(&self) -> Vec<(String, Language)> {
                match self { $(Action::$variant(a) => a.code(),)* }
            }
            pub fn describe(&self, cx: &dyn DescribeContext) -> String {
                match self { $(Action::$variant(a) => a.describe(cx),)* }
            }
            pub fn unsupported(&self) -> Option<String> {
                match self { $(Action::$variant(a) => a.unsupported(),)* }
            }
            pub fn runnable(&self) -> bool {
                match self { $(Action::$variant(_) => <$family::$verb::$ty as ActionSpec>::RUNNABLE,)* }
            }
            pub fn idempotent(&self) -> bool {
                match self { $(Action::$variant(a) => a.idempotent(),)* }
            }
            pub fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
                match self { $(Action::$variant(a) => a.execute(cx),)* }
            }
            pub fn preview<'a>(&'a self, cx: &'a Exec<'a>) -> Option<PreviewFuture<'a>> {
                match self { $(Action::$variant(a) => a.preview(cx),)* }
            }
            pub fn previews(&self) -> bool {
                match self { $(Action::$variant(_) => <$family::$verb::$ty as ActionSpec>::PREVIEWS,)* }
            }
        }

        /// Every action, in the order of this list.
        pub fn catalog() -> Vec<ActionInfo> {
            vec![$(info::<$family::$verb::$ty>(),)*]
        }

        /// Outputs of an action by name, without a `with`.
        pub fn outputs_of(name: &str) -> Option<&'static [Output]> {
            $(if name == <$family::$verb::$ty as ActionSpec>::NAME {
                return Some(<$family::$verb::$ty as ActionSpec>::OUTPUTS);
            })*
            None
        }

        pub const NAMES: &[&str] = &[$(<$family::$verb::$ty as ActionSpec>::NAME,)*];

        /// Each action's name and the file the list says holds it, for the layout test.
        #[cfg(test)]
        const FILES: &[(&str, &str)] = &[$((
            <$family::$verb::$ty as ActionSpec>::NAME,
            concat!(stringify!($family), "/", stringify!($verb), ".rs"),
        ),)*];

        /// [`ActionSpec::RECOVERY_POINTS`] of an action by name.
        pub fn recovery_points(name: &str) -> &'static [(&'static str, &'static str)] {
            $(if name == <$family::$verb::$ty as ActionSpec>::NAME {
                return <$family::$verb::$ty as ActionSpec>::RECOVERY_POINTS;
            })*
            &[]
        }

        /// [`ActionSpec::STORED_BYTES`] of an action by name.
        pub fn stored_bytes(name: &str) -> Option<&'static str> {
            $(if name == <$family::$verb::$ty as ActionSpec>::NAME {
                return <$family::$verb::$ty as ActionSpec>::STORED_BYTES;
            })*
            None
        }

        /// [`ActionSpec::RESTORED_AS_OF`] of an action by name.
        pub fn restored_as_of(name: &str) -> Option<&'static str> {
            $(if name == <$family::$verb::$ty as ActionSpec>::NAME {
                return <$family::$verb::$ty as ActionSpec>::RESTORED_AS_OF;
            })*
            None
        }
    };
}

actions! {
    Shell => local::shell::Shell,
    HttpRequest => http::request::HttpRequest,
    Wait => local::wait::Wait,
    Approval => local::approval::Approval,
    Runbook => local::runbook::Runbook,
    NotifyWebhook => notify::webhook::NotifyWebhook,
    PostgresQuery => postgres::query::PostgresQuery,
    PostgresStopWriters => postgres::stop_writers::PostgresStopWriters,
    PostgresResumeWriters => postgres::resume_writers::PostgresResumeWriters,
    PostgresBackup => postgres::backup::PostgresBackup,
    PostgresRestore => postgres::restore::PostgresRestore,
    PostgresSwapBack => postgres::swap_back::PostgresSwapBack,
    PostgresPromote => postgres::promote::PostgresPromote,
    PostgresStopCluster => postgres::stop_cluster::PostgresStopCluster,
    PostgresStartCluster => postgres::start_cluster::PostgresStartCluster,
    PgbackrestBackup => pgbackrest::backup::PgbackrestBackup,
    PgbackrestRestore => pgbackrest::restore::PgbackrestRestore,
    PgbackrestInfo => pgbackrest::info::PgbackrestInfo,
    PgbackrestCheck => pgbackrest::check::PgbackrestCheck,
    PgbackrestVerify => pgbackrest::verify::PgbackrestVerify,
    PgbackrestExpire => pgbackrest::expire::PgbackrestExpire,
    S3Put => s3::put::S3Put,
    S3Get => s3::get::S3Get,
    S3List => s3::list::S3List,
    S3Latest => s3::latest::S3Latest,
    S3Delete => s3::delete::S3Delete,
    S3Retention => s3::retention::S3Retention,
    S3Copy => s3::copy::S3Copy,
    BackupVerify => backup::verify::BackupVerify,
    BackupRekey => backup::rekey::BackupRekey,
    FilesBackup => files::backup::FilesBackup,
    FilesRestore => files::restore::FilesRestore,
    KubernetesScale => kubernetes::scale::KubernetesScale,
    KubernetesRolloutRestart => kubernetes::rollout_restart::KubernetesRolloutRestart,
    KubernetesWaitReady => kubernetes::wait_ready::KubernetesWaitReady,
    KubernetesJob => kubernetes::job::KubernetesJob,
    KubernetesDelete => kubernetes::delete::KubernetesDelete,
    KubernetesApply => kubernetes::apply::KubernetesApply,
    KubernetesWait => kubernetes::wait::KubernetesWait,
    KubernetesExport => kubernetes::export::KubernetesExport,
    KubernetesImport => kubernetes::import::KubernetesImport,
    DnsFailover => dns::failover::DnsFailover,
    DnsVerify => dns::verify::DnsVerify,
    Neo4jQuery => neo4j::query::Neo4jQuery,
    Neo4jBackup => neo4j::backup::Neo4jBackup,
    Neo4jRestore => neo4j::restore::Neo4jRestore,
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// `family.verb` is in `<family>/<verb>.rs` (`local/<name>.rs` without a family), and every
    /// file in a family's folder but its `mod.rs` is an action of the list: a newcomer finds an
    /// action by its name, and no action file exists that the registry forgot.
    #[test]
    fn each_action_is_in_the_file_its_name_says_and_each_file_is_registered() {
        let mut listed = BTreeSet::new();
        for (name, file) in super::FILES {
            let expected = match name.split_once('.') {
                Some((family, verb)) => format!("{family}/{verb}.rs"),
                None => format!("local/{name}.rs"),
            };
            assert_eq!(*file, expected, "the list puts `{name}` in the wrong file");
            listed.insert(expected);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/actions");
        let mut on_disk = BTreeSet::new();
        for family in std::fs::read_dir(&root).unwrap() {
            let family = family.unwrap().path();
            let name = family.file_name().unwrap().to_string_lossy().into_owned();
            // support/ is shared code, not a family.
            if !family.is_dir() || name == "support" {
                continue;
            }
            assert!(family.join("mod.rs").is_file(), "{name}/ has no mod.rs");
            for f in std::fs::read_dir(&family).unwrap() {
                let f = f.unwrap().file_name().to_string_lossy().into_owned();
                if f != "mod.rs" {
                    on_disk.insert(format!("{name}/{f}"));
                }
            }
        }
        assert_eq!(
            on_disk, listed,
            "files in family folders and the `actions!` list differ"
        );
        assert_eq!(super::NAMES.len(), listed.len());
    }
}
