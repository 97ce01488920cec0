//! `neo4j.query`: run Cypher and return the rows and the counters.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Neo4jTarget;
use crate::actions::support::neo4j_values as value;
use crate::actions::{
    ActionError, ActionFuture, ActionSpec, ConnectionUse, DescribeContext, Exec, Language, Output,
    When, WithProblem, out, support::the_connection,
};
use crate::runbook::ConnectionKind;

/// Run one Cypher statement with parameters (`$name`). Unless `writes` is true it runs in read
/// access mode, which the server enforces: a verification query cannot change the graph by
/// mistake. It runs as an auto-commit transaction, so `CALL { … } IN TRANSACTIONS` works.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Neo4jQuery {
    /// A `neo4j` connection.
    pub connection: String,
    pub cypher: String,
    /// Values for `$name`: JSON, or a tagged value for Neo4j's own types
    /// (`{"$date": "2024-02-29"}`, `{"$point": [4326, x, y]}`; docs/neo4j.md).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, serde_json::Value>,
    /// Allow the statement to write.
    #[serde(default)]
    pub writes: bool,
}

/// The counters of a summary, named as Cypher's own `PROFILE` names them.
fn counters(c: &neo4rs::summary::Counters) -> serde_json::Value {
    serde_json::json!({
        "nodes_created": c.nodes_created,
        "nodes_deleted": c.nodes_deleted,
        "relationships_created": c.relationships_created,
        "relationships_deleted": c.relationships_deleted,
        "properties_set": c.properties_set,
        "labels_added": c.labels_added,
        "labels_removed": c.labels_removed,
        "indexes_added": c.indexes_added,
        "indexes_removed": c.indexes_removed,
        "constraints_added": c.constraints_added,
        "constraints_removed": c.constraints_removed,
    })
}

impl ActionSpec for Neo4jQuery {
    const NAME: &'static str = "neo4j.query";
    const SUMMARY: &'static str =
        "Run Cypher and return the rows and counters (read access mode unless `writes: true`)";
    const OUTPUTS: &'static [Output] = &[
        out(
            "rows",
            "the rows, each an object of column name to typed JSON (nodes, relationships, paths, temporal values as ISO 8601, points as {srid, x, y})",
        ),
        out("row_count", "rows returned"),
        out(
            "counters",
            "what the statement changed: nodes_created, relationships_deleted, properties_set, …",
        ),
    ];
    const READ_ONLY: When<Self> = When::If {
        what: "without `writes`",
        test: |a| !a.writes,
    };
    const DESTRUCTIVE: When<Self> = When::If {
        what: "with `writes`",
        test: |a| a.writes,
    };
    const RUNNABLE: bool = true;

    fn execute<'a>(&'a self, cx: &'a Exec<'a>) -> ActionFuture<'a> {
        Box::pin(async move {
            let target = Neo4jTarget::from_exec(cx, &self.connection)?;
            let params = self
                .params
                .iter()
                .map(|(k, v)| {
                    value::untag(v)
                        .map(|b| (k.clone(), b))
                        .map_err(|e| ActionError::permanent(format!("params.{k}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let db = target.connect(1000).await?;
            let q = neo4rs::query(&self.cypher).params(params);
            let doing = "running the query";
            let mut stream = if self.writes {
                db.graph.execute(q).await
            } else {
                db.graph.execute_read(q).await
            }
            .map_err(|e| target.classify(&e, doing))?;
            let mut rows = Vec::new();
            while let Some(row) = stream
                .next()
                .await
                .map_err(|e| target.classify(&e, doing))?
            {
                rows.push(row_json(&row)?);
            }
            let summary = stream
                .finish()
                .await
                .map_err(|e| target.classify(&e, doing))?;
            Ok(serde_json::json!({
                "row_count": rows.len(),
                "rows": rows,
                "counters": counters(summary.stats()),
            }))
        })
    }

    fn code(&self) -> Vec<(String, Language)> {
        vec![("/cypher".into(), Language::Cypher)]
    }
    fn connections(&self) -> Vec<ConnectionUse<'_>> {
        the_connection(&self.connection, &[ConnectionKind::Neo4j])
    }
    fn check(&self) -> Vec<WithProblem> {
        self.params
            .iter()
            .filter(|(_, v)| !v.as_str().is_some_and(crate::actions::unknown_yet))
            .filter_map(|(k, v)| {
                value::untag(v)
                    .err()
                    .map(|e| WithProblem::new(format!("/params/{k}"), e))
            })
            .collect()
    }
    fn describe(&self, cx: &dyn DescribeContext) -> String {
        let cypher = self.cypher.split_whitespace().collect::<Vec<_>>().join(" ");
        let mode = if self.writes { "run" } else { "run read-only" };
        let params = if self.params.is_empty() {
            String::new()
        } else {
            format!(
                " with params {}",
                serde_json::to_string(&self.params).unwrap_or_default()
            )
        };
        format!(
            "{mode} on {}: {cypher}{params}",
            cx.connection(&self.connection)
        )
    }
}

/// A row as an object of column name to plain typed JSON, columns in name order (neo4rs does
/// not keep the statement's order, and a run log must not change from run to run).
fn row_json(row: &neo4rs::Row) -> Result<serde_json::Value, ActionError> {
    let mut keys: Vec<String> = row.keys().into_iter().map(|k| k.value.clone()).collect();
    keys.sort();
    let mut out = serde_json::Map::new();
    for k in keys {
        let v = super::column(row, &k)?;
        let j =
            value::plain(&v).map_err(|e| ActionError::permanent(format!("column `{k}`: {e}")))?;
        out.insert(k, j);
    }
    Ok(serde_json::Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Effect;
    use crate::actions::test_support::*;
    use serde_json::json;

    #[test]
    fn read_only_unless_told() {
        let q = parse::<Neo4jQuery>(
            json!({"connection": "graph", "cypher": "MATCH (n:Person)\n RETURN count(n) AS n"}),
        );
        assert_eq!(q.effect(), Effect::ReadOnly);
        assert_eq!(
            q.describe(&Cx),
            "run read-only on <graph>: MATCH (n:Person) RETURN count(n) AS n"
        );
        let w = parse::<Neo4jQuery>(json!({
            "connection": "graph", "cypher": "MATCH (n) WHERE n.id = $id DETACH DELETE n",
            "params": {"id": 4}, "writes": true
        }));
        assert!(w.destructive());
        assert_eq!(
            w.describe(&Cx),
            "run on <graph>: MATCH (n) WHERE n.id = $id DETACH DELETE n with params {\"id\":4}"
        );
    }

    #[test]
    fn a_bad_tagged_param_is_refused_before_the_run() {
        let q = parse::<Neo4jQuery>(json!({
            "connection": "g", "cypher": "RETURN $d",
            "params": {"d": {"$date": "yesterday"}, "later": "{{ params.x }}"}
        }));
        let p = q.check();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].field, "/params/d");
        assert!(
            reject::<Neo4jQuery>(json!({"connection": "g", "query": "x"}))
                .contains("unknown field `query`")
        );
    }
}
