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
}

impl Serialize for ConnectionKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
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
    /// `bolt://host:7687`
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}
