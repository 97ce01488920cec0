//! Connections: the kinds a runbook can declare, listed once in `connection_kinds!`, and the
//! fields of each. The list generates [`ConnectionKind`] (with `ALL` and the names) and the
//! [`Connection`] the YAML is read into, so a kind cannot be half-added.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! connection_kinds {
    ($($variant:ident => $field:ident : $ty:ident,)*) => {
        /// The kinds of connection a runbook can declare.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ConnectionKind {
            $($variant,)*
        }

        impl ConnectionKind {
            pub const ALL: &'static [ConnectionKind] = &[$(ConnectionKind::$variant,)*];

            /// The key a runbook declares the kind with (`connections.<name>.<kind>`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ConnectionKind::$variant => stringify!($field),)*
                }
            }
        }

        /// A named endpoint. Exactly one kind.
        #[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        #[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
        pub struct Connection {
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }
    };
}

connection_kinds! {
    Postgres => postgres: PostgresConnection,
    S3 => s3: S3Connection,
    Kubernetes => kubernetes: KubernetesConnection,
    Rfc2136 => rfc2136: Rfc2136Connection,
    Route53 => route53: Route53Connection,
    Neo4j => neo4j: Neo4jConnection,
    Pgbackrest => pgbackrest: PgbackrestConnection,
}

impl Serialize for ConnectionKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A connection's string field, rendered. An empty string is "not set": runbooks pass optional
/// params through templates, which render an absent one as "".
pub fn connection_field(fields: &serde_json::Value, key: &str) -> Option<String> {
    fields
        .get(key)
        .and_then(serde_json::Value::as_str)
        .filter(|v| !v.is_empty())
        .map(String::from)
}

impl ConnectionKind {
    /// `postgres orders_db (postgres://app@db:5432/orders)`: kind, name and where it points,
    /// for plans (no secret: a password written into a URL is hidden).
    pub fn label(self, name: &str, fields: &serde_json::Value) -> String {
        let s = |k: &str| connection_field(fields, k);
        let detail = match self {
            ConnectionKind::Postgres => s("url").map(|u| redact_url(&u)),
            ConnectionKind::S3 => s("bucket").map(|b| format!("bucket {b}")),
            ConnectionKind::Kubernetes => {
                let parts: Vec<String> = [("context", s("context")), ("namespace", s("namespace"))]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| format!("{k} {v}")))
                    .collect();
                (!parts.is_empty()).then(|| parts.join(", "))
            }
            ConnectionKind::Rfc2136 => {
                s("server").map(|srv| format!("zone {} at {srv}", s("zone").unwrap_or_default()))
            }
            ConnectionKind::Route53 => s("hosted_zone_id").map(|z| format!("hosted zone {z}")),
            ConnectionKind::Neo4j => s("uri").map(|u| redact_url(&u)),
            ConnectionKind::Pgbackrest => s("stanza").map(|st| match s("config") {
                Some(c) => format!("stanza {st}, {c}"),
                None => format!("stanza {st}"),
            }),
        };
        match detail {
            Some(d) => format!("{self} {name} ({d})"),
            None => format!("{self} {name}"),
        }
    }
}

/// Hides a password written into a URL's userinfo: plans are pasted into pull requests.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}://{}:***{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

impl std::fmt::Display for ConnectionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresConnection {
    /// libpq-style URL, e.g. `postgres://app@db:5432/orders`. Keep passwords out of it: use `password`.
    pub url: String,
    /// Password, usually `{{ secrets.NAME }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// PEM file of the CA(s) that sign the server's certificate, when it is not a public one.
    /// With TLS (`sslmode=prefer` or `require`) the certificate is always verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3Connection {
    pub bucket: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Custom endpoint (SeaweedFS, MinIO, a VPC endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style addressing, needed by most non-AWS servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_style: Option<crate::actions::Tpl<bool>>,
    /// Access key id; when absent, the usual AWS credential chain is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConnection {
    /// kubeconfig context; the current context when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Path of the kubeconfig file; `$KUBECONFIG` or `~/.kube/config` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Connection {
    /// Primary server, `host:port`.
    pub server: String,
    pub zone: String,
    /// TSIG key name.
    pub key_name: String,
    /// TSIG secret (base64), usually `{{ secrets.NAME }}`.
    pub key_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<TsigAlgorithm>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route53Connection {
    /// The hosted zone's id (`Z0123...`; a `/hostedzone/` prefix is accepted).
    pub hosted_zone_id: String,
    /// Custom endpoint (a VPC endpoint, or a test server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Access key id; when absent, the usual AWS credential chain is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Neo4jConnection {
    /// `bolt://host:7687`; `bolt+s://` for TLS with the certificate verified, `bolt+ssc://`
    /// for TLS accepting a self-signed one. lifeboat speaks Bolt 4.4 (Neo4j 4.4 to 5.x).
    pub uri: String,
    /// `neo4j` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password, usually `{{ secrets.NAME }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The database; the server's default database when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// PEM file of the CA that signs the server's certificate, when it is not a public one
    /// (with `bolt+s://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PgbackrestConnection {
    /// The stanza: the cluster's name in the repository.
    pub stanza: String,
    /// pgBackRest's configuration file (its own default, `/etc/pgbackrest/pgbackrest.conf`,
    /// when absent). It describes the repository and the cluster (`pg1-path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Which of the configuration's repositories to use (`--repo`); pgBackRest's choice when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<crate::actions::Tpl<u8>>,
    /// The operating-system user pgBackRest runs as: the cluster's owner, usually `postgres`.
    /// lifeboat runs it through `runuser` when it is root, `sudo -n` otherwise. Absent: as
    /// lifeboat's own user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_user: Option<String>,
    /// The repository's encryption passphrase (`repo-cipher-pass`), usually
    /// `{{ secrets.NAME }}`. Passed in pgBackRest's environment, never on its command line;
    /// overrides the configuration's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_pass: Option<String>,
    /// The S3 repository's access key (`repo-s3-key`), overriding the configuration's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_key: Option<String>,
    /// The S3 repository's secret key (`repo-s3-key-secret`), usually `{{ secrets.NAME }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_key_secret: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_hidden() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn a_label_says_where_a_connection_points_without_its_password() {
        let label = |kind: ConnectionKind, fields: serde_json::Value| kind.label("db", &fields);
        assert_eq!(
            label(
                ConnectionKind::Postgres,
                serde_json::json!({"url": "postgres://a:pw@h/x"})
            ),
            "postgres db (postgres://a:***@h/x)"
        );
        assert_eq!(
            label(
                ConnectionKind::Kubernetes,
                serde_json::json!({"namespace": "shop", "context": ""})
            ),
            "kubernetes db (namespace shop)"
        );
        assert_eq!(label(ConnectionKind::S3, serde_json::json!({})), "s3 db");
    }
}
