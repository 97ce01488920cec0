//! The runbook as written: the serde types the YAML is read into and the JSON Schema is generated
//! from. Nothing here is checked beyond its shape; `validate` turns it into a [`super::ValidRunbook`].

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Connection;

/// A lifeboat runbook: a versioned procedure of typed steps forming a DAG.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "lifeboat runbook (lifeboat/v1)")]
pub struct Runbook {
    /// Format version of this file. Always `lifeboat/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: ApiVersion,
    /// Always `Runbook`.
    pub kind: Kind,
    pub metadata: Metadata,
    /// Recovery objectives that drills measure against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Objectives>,
    /// Typed inputs, given on the command line as `-p name=value`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, Param>,
    /// Secret values, resolved only when the runbook runs and never written to any output.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub secrets: IndexMap<String, Secret>,
    /// Named endpoints that steps refer to by name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub connections: IndexMap<String, Connection>,
    /// Locks held for the whole run; a second run needing one of them is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[a-z0-9][a-z0-9._-]*$")))]
    pub locks: Vec<String>,
    /// A deadline for each `run`, `resume` or `drill` of this runbook (`45m`): when it passes,
    /// running steps are cancelled and the run rolls back. `--timeout` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    /// Timeout and retry policy for steps that do not set their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Defaults>,
    /// The steps. Order does not matter to execution: `needs` does.
    #[schemars(length(min = 1))]
    pub steps: Vec<Step>,
    /// Steps that run only when the run failed, after its rollback: page someone, post the failed
    /// step and its error (`run.failed_step`, `run.error`). `needs` names steps of this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<Step>,
    /// Steps that run at the end of every run that ended, succeeded or failed (after
    /// `on_failure`); `run.status` says which. `needs` names steps of this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<Step>,
    /// Game-day drills of this procedure: faults to inject on purpose, and the checks that say the
    /// service is healthy. Run with `lifeboat drill FILE --scenario NAME`; `run` ignores this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<Drill>,
}

/// Game-day drills: `lifeboat drill` runs a scenario's steady-state checks, its fault, the
/// runbook's steps (the recovery), then the checks again, and measures RTO and RPO.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Drill {
    /// The connections a drill may touch. `lifeboat drill` refuses to run a scenario whose steps
    /// use any other connection unless `--i-know` is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Scenarios by name (lowercase letters, digits, `-` and `_`).
    #[schemars(extend("minProperties" = 1))]
    pub scenarios: IndexMap<String, Scenario>,
}

/// One way of breaking the service on purpose, and how to tell that it works again.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Objectives for this scenario; each one not given is the runbook's `objectives`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Objectives>,
    /// Checks that hold while the service is healthy (it answers, counts match). They run before
    /// the fault and again after the recovery, so they must only read; retry them to wait for
    /// the service to come back. Their ids appear in the run as `before.<id>` and `after.<id>`.
    #[schemars(length(min = 1))]
    pub steady_state: Vec<Step>,
    /// The fault, run once the steady state holds: drop a table, stop writers, delete a
    /// Deployment, kill a server process. Its end is the incident that RTO and RPO count from.
    #[schemars(length(min = 1))]
    pub inject: Vec<Step>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum ApiVersion {
    #[serde(rename = "lifeboat/v1")]
    V1,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum Kind {
    Runbook,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Lowercase letters, digits and dashes.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// Semantic version of this procedure; recorded in every run.
    #[schemars(with = "String")]
    pub version: VersionText,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Teams to page about this procedure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
}

/// `metadata.version` as written. YAML reads `2.1` as a number, so numbers are accepted here and
/// reported by validation as "not a semantic version" rather than as a type error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct VersionText(pub serde_json::Value);

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// Recovery time objective: longest acceptable time from incident to service restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto: Option<DurationText>,
    /// Recovery point objective: most data, in time, that may be lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<DurationText>,
}

/// Names of params, secrets and connections: usable in templates as `params.<name>`.
pub const NAME_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Param {
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// The type of each item of an `array` param (`string`, `integer`, `number`, `boolean`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<ParamType>,
    /// Value used when the param is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    /// The only values allowed (for an `array`, the only items).
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<serde_json::Value>>,
    /// Whether the param must be given. Defaults to true when there is no default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    String,
    Integer,
    Number,
    Boolean,
    /// A list of `items`: `-p dbs=orders,users` or `-p 'dbs=["orders", "users"]'`.
    Array,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
        }
    }
}

/// Where a secret comes from. Exactly one of `env` and `file`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct Secret {
    /// Name of an environment variable holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file holding the value (a trailing newline is removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// Retry policy: exponential backoff from `delay`, multiplied by `factor`, capped at `max_delay`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Total attempts, the first included. `1` means no retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DurationText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 10.0))]
    pub factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<DurationText>,
    /// Randomize each delay to spread retries of parallel steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<bool>,
    /// `shell` steps: the exit statuses that mean "try again" (a lock held, a server not up
    /// yet); any other non-zero status fails the step at once. Without it, every status but
    /// 126 and 127 (cannot run) is retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exit_codes: Option<Vec<ExitCode>>,
}

/// A process's exit status that is not success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct ExitCode(#[schemars(range(min = 1, max = 255))] pub u8);

/// One step of the DAG.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique within the runbook: a lowercase letter, then lowercase letters, digits, `_`.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]*$"), length(max = 64))]
    pub id: String,
    /// The step's type, `family.verb`: selects the schema of `with` and the code that runs it.
    pub action: String,
    /// Steps that must succeed before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// The action's inputs. Strings may hold `{{ ... }}` templates.
    #[serde(default = "empty_object", rename = "with")]
    pub with: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Expression; when false the step is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Expression over `outputs`; when false the step fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// What to do when a step this one needs is skipped: `skip` this one too (the default), or
    /// `run` it anyway (a notification, a cleanup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_skipped_needs: Option<OnSkippedNeeds>,
    /// Run when the run is rolled back after this step completed; undoes what it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<Compensation>,
    /// One step per item: a list, or a template of params that yields one
    /// (`"{{ params.databases }}"`). Each is `<id>[<item>]`, with `item` in its templates; a
    /// `needs` on `<id>` waits for all of them, and `steps.<id>.outputs` is their outputs, a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEachText>,
    /// With `for_each`: how many of its steps run at the same time, at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_parallel: Option<u32>,
}

/// The items of a `for_each` as written: a list, or a template of params that yields one. Read
/// as a plain value (an untagged enum would lose the error's location) and told apart by
/// validation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct ForEachText(pub serde_json::Value);

impl JsonSchema for ForEachText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ForEach".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The items: a list (strings, numbers, objects), or one `{{ expression }}` of params whose value is a list.",
            "anyOf": [{"type": "array"}, {"type": "string"}],
        })
    }
}

pub fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnSkippedNeeds {
    #[default]
    Skip,
    Run,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Stop the run and roll back.
    #[default]
    Abort,
    /// Record the failure and go on; dependents still run.
    Continue,
}

/// The step run to undo a completed step when its run is rolled back.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Compensation {
    pub action: String,
    #[serde(default = "empty_object", rename = "with")]
    pub with: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationText>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
}

/// A duration as written: `90s`, `10m`, `1h30m`, `500ms`, `2d`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct DurationText(pub serde_json::Value);

/// The pattern editors check durations against; `duration::parse` is the authority and gives the
/// precise reason, so schema errors on this pattern are rewritten to its message.
/// A template is accepted too: inside `with` it is rendered before the action reads it.
pub const DURATION_PATTERN: &str = r"^(([0-9]+(ms|s|m|h|d))+|.*\{\{.*)$";

impl JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: a number and a unit (ms, s, m, h, d), e.g. `90s`, `10m`, `1h30m`.",
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}
