//! What the Neo4j actions share: connecting over Bolt (neo4rs, under a timeout: it can wait
//! forever on a server that does not answer the way it expects), classifying errors as
//! transient or not, and values in both directions: rows as typed JSON for `neo4j.query`, and
//! the exact, tagged form a logical backup keeps every property type in
//! (`support::neo4j_values`).

pub mod backup;
pub mod query;
pub mod restore;

use std::time::Duration;

use crate::actions::{ActionError, Exec};

/// How long connecting (TCP, TLS, Bolt handshake, authentication) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// What neo4rs is given as its `connection_timeout`, which it applies to every read from the
/// server too, not only to connecting: a statement that runs longer (a restore's batch, awaiting
/// indexes, deleting a big graph in transactions) would fail with "connection timed out".
/// Connecting is bounded by [`CONNECT_TIMEOUT`] around the probe; the step's timeout bounds
/// the rest.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// A rendered `neo4j` connection.
#[derive(Clone)]
pub struct Neo4jTarget {
    /// Where it points, without credentials: for messages.
    pub uri: String,
    user: String,
    password: String,
    pub database: Option<String>,
    ca_file: Option<String>,
}

impl Neo4jTarget {
    pub fn from_exec(cx: &Exec<'_>, name: &str) -> Result<Neo4jTarget, ActionError> {
        let fields = (cx.connection)(name).map_err(ActionError::permanent)?;
        let get = |k: &str| crate::runbook::connection_field(&fields, k);
        let uri = get("uri")
            .ok_or_else(|| ActionError::permanent(format!("connection `{name}` has no uri")))?;
        Ok(Neo4jTarget {
            uri,
            user: get("user").unwrap_or_else(|| "neo4j".into()),
            password: get("password").unwrap_or_default(),
            database: get("database"),
            ca_file: get("ca_file"),
        })
    }

    /// A connection pool that has proved it can run a query: neo4rs connects lazily, so a wrong
    /// password or a server that is not there would otherwise surface at the first real query.
    pub async fn connect(&self, fetch_size: usize) -> Result<Connected, ActionError> {
        let mut b = neo4rs::ConfigBuilder::default()
            .uri(self.uri.as_str())
            .user(self.user.as_str())
            .password(self.password.as_str())
            .fetch_size(fetch_size)
            .max_connections(4)
            .connection_timeout(RECEIVE_TIMEOUT);
        if let Some(db) = &self.database {
            b = b.db(db.as_str());
        }
        if let Some(ca) = &self.ca_file {
            b = b.with_client_certificate(ca);
        }
        let config = b
            .build()
            .map_err(|e| ActionError::permanent(format!("connection to {}: {e}", self.uri)))?;
        let graph = neo4rs::Graph::connect(config).map_err(|e| self.classify(&e, "connecting"))?;
        let probe = async {
            let mut txn = graph.start_txn().await?;
            let mut rows = txn
                .execute(neo4rs::query(
                    "CALL dbms.components() YIELD versions, edition RETURN versions[0] AS v, edition AS e",
                ))
                .await?;
            let row = rows.next(txn.handle()).await?;
            txn.rollback().await?;
            Ok::<_, neo4rs::Error>(row)
        };
        let row = match tokio::time::timeout(CONNECT_TIMEOUT, probe).await {
            Ok(r) => r.map_err(|e| self.classify(&e, "connecting"))?,
            Err(_) => {
                return Err(ActionError::transient(format!(
                    "connecting to {}: no answer in {}s (not a Neo4j server speaking Bolt 4.4, or it is not up yet)",
                    self.uri,
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
        let field = |k: &str| -> String {
            row.as_ref()
                .and_then(|r| r.get::<String>(k).ok())
                .unwrap_or_default()
        };
        Ok(Connected {
            version: field("v"),
            edition: field("e"),
            graph,
        })
    }

    /// What went wrong, and whether another attempt may help: Neo4j's own classification
    /// (`Neo.TransientError.*`) for server errors; for the connection, refused or reset is
    /// transient, authentication and protocol are not.
    pub fn classify(&self, e: &neo4rs::Error, doing: &str) -> ActionError {
        use neo4rs::Error as E;
        let at = &self.uri;
        match e {
            E::Neo4j(n) => {
                let code = n.code();
                let msg = format!("{doing} on {at}: {} ({code})", n.message());
                let transient = code.starts_with("Neo.TransientError")
                    && !code.contains("Terminated")
                    || code == "Neo.ClientError.Cluster.NotALeader";
                if code.starts_with("Neo.ClientError.Security") {
                    ActionError::permanent(format!(
                        "{doing} on {at}: the server refused the credentials: {} ({code})",
                        n.message()
                    ))
                } else if transient {
                    ActionError::transient(msg)
                } else {
                    ActionError::permanent(msg)
                }
            }
            E::AuthenticationError(m) => ActionError::permanent(format!(
                "{doing} on {at}: the server refused the credentials: {m}"
            )),
            E::UnsupportedVersion(..) | E::ProtocolMismatch(_) => ActionError::permanent(format!(
                "{doing} on {at}: {e} (lifeboat speaks Bolt 4.4, which Neo4j 4.4 to 5.x accept)"
            )),
            E::UrlParseError(_) | E::UnsupportedScheme(_) | E::InvalidDnsName(_) => {
                ActionError::permanent(format!("{doing}: `{at}`: {e}"))
            }
            E::IOError { detail } => {
                let msg = format!("{doing} on {at}: {detail}");
                // A certificate the server shows that does not verify comes as an IO error.
                if detail.to_string().to_lowercase().contains("certificate") {
                    ActionError::permanent(msg)
                } else {
                    ActionError::transient(msg)
                }
            }
            E::ConnectionError | E::ConnectionTimedOut | E::ServerUnavailableError(_) => {
                ActionError::transient(format!("{doing} on {at}: {e}"))
            }
            _ => ActionError::permanent(format!("{doing} on {at}: {e}")),
        }
    }
}

/// A pool that answered, and what it answered with.
pub struct Connected {
    pub graph: neo4rs::Graph,
    /// `5.26.30`
    pub version: String,
    /// `community` or `enterprise`
    pub edition: String,
}

/// Reads every row of `q` in `txn`, each as its columns' values.
pub async fn rows_of(
    target: &Neo4jTarget,
    txn: &mut neo4rs::Txn,
    q: neo4rs::Query,
    doing: &str,
) -> Result<Vec<neo4rs::Row>, ActionError> {
    let mut stream = txn
        .execute(q)
        .await
        .map_err(|e| target.classify(&e, doing))?;
    let mut out = Vec::new();
    while let Some(row) = stream
        .next(txn.handle())
        .await
        .map_err(|e| target.classify(&e, doing))?
    {
        out.push(row);
    }
    Ok(out)
}

/// A column of a row, as neo4rs decoded it.
pub fn column(row: &neo4rs::Row, name: &str) -> Result<neo4rs::BoltType, ActionError> {
    row.get::<neo4rs::BoltType>(name)
        .map_err(|e| ActionError::permanent(format!("reading column `{name}`: {e}")))
}

/// The neo4j-admin command line a dump or load runs (`neo4j-admin` from the PATH by default).
pub fn admin(given: &[String]) -> Vec<String> {
    if given.is_empty() {
        vec!["neo4j-admin".into()]
    } else {
        given.to_vec()
    }
}

/// The optional `neo4j` connection of an action that needs it for one method only.
pub fn graph_connection(name: Option<&str>) -> Vec<crate::actions::ConnectionUse<'_>> {
    name.map(|name| crate::actions::ConnectionUse {
        field: "/connection",
        name,
        kinds: &[crate::runbook::ConnectionKind::Neo4j],
    })
    .into_iter()
    .collect()
}

/// Cypher's quoting of a name (a label, a type, a property key).
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_for_cypher() {
        assert_eq!(ident("Person"), "`Person`");
        assert_eq!(ident("a`b"), "`a``b`");
    }
}
