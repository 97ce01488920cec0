//! Neo4j values as JSON, two ways.
//!
//! - [`plain`]: what `neo4j.query` returns, for templates and `assert`: temporal values as ISO
//!   8601 strings, points as `{srid, x, y[, z]}`, byte arrays as base64, nodes, relationships
//!   and paths as objects.
//! - [`tagged`] and [`untag`]: what a logical backup keeps, exact and reversible. JSON's own
//!   types stand for themselves (a float is always written with a fraction, so it reads back as
//!   a float); every other type is a one-key object naming it: `{"$date": "2024-02-29"}`,
//!   `{"$duration": [months, days, seconds, nanoseconds]}`, `{"$point": [srid, x, y]}`,
//!   `{"$bytes": base64}`, `{"$float": "NaN"}`. Property values are never maps in Neo4j, so an
//!   object is always a tag. The format is documented in docs/neo4j.md.

use base64::Engine;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use neo4rs::BoltType as B;
use serde::Deserialize;
use serde::de::IntoDeserializer;
use serde_json::{Map, Value, json};

const TIME: &str = "%H:%M:%S%.f";
const LOCAL_DATETIME: &str = "%Y-%m-%dT%H:%M:%S%.f";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `[months, days, seconds, nanoseconds]`, exactly as the server keeps a duration.
fn duration_parts(v: &B) -> Result<[i64; 4], String> {
    <(i64, i64, i64, i64)>::deserialize(v.into_deserializer())
        .map(|(m, d, s, n)| [m, d, s, n])
        .map_err(|e| format!("reading a duration: {e}"))
}

/// ISO 8601, as Cypher's `toString(duration)` writes it: `P1Y2M3DT4.5S`.
fn iso_duration([months, days, seconds, nanos]: [i64; 4]) -> String {
    let mut s = String::from("P");
    if months / 12 != 0 {
        s.push_str(&format!("{}Y", months / 12));
    }
    if months % 12 != 0 {
        s.push_str(&format!("{}M", months % 12));
    }
    if days != 0 {
        s.push_str(&format!("{days}D"));
    }
    let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    if total != 0 || s == "P" {
        s.push('T');
        let (sign, total) = if total < 0 {
            ("-", -total)
        } else {
            ("", total)
        };
        let (h, rest) = (total / 3_600_000_000_000, total % 3_600_000_000_000);
        let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
        if h != 0 {
            s.push_str(&format!("{sign}{h}H"));
        }
        if m != 0 {
            s.push_str(&format!("{sign}{m}M"));
        }
        if rest != 0 || (h == 0 && m == 0) {
            let (secs, frac) = (rest / 1_000_000_000, rest % 1_000_000_000);
            if frac == 0 {
                s.push_str(&format!("{sign}{secs}S"));
            } else {
                let frac = format!("{frac:09}");
                s.push_str(&format!("{sign}{secs}.{}S", frac.trim_end_matches('0')));
            }
        }
    }
    s
}

/// The temporal types as ISO 8601 text; `None` for any other type.
fn temporal_text(v: &B) -> Option<Result<(&'static str, String), String>> {
    let conv = |e: neo4rs::Error| format!("reading a temporal value: {e}");
    Some(match v {
        B::Date(d) => NaiveDate::try_from(d)
            .map(|d| ("$date", d.format("%Y-%m-%d").to_string()))
            .map_err(conv),
        B::LocalTime(t) => Ok(("$localtime", NaiveTime::from(t).format(TIME).to_string())),
        B::Time(t) => {
            let (t, off): (NaiveTime, FixedOffset) = t.into();
            Ok(("$time", format!("{}{off}", t.format(TIME))))
        }
        B::LocalDateTime(t) => NaiveDateTime::try_from(t)
            .map(|t| ("$localdatetime", t.format(LOCAL_DATETIME).to_string()))
            .map_err(conv),
        B::DateTime(t) => DateTime::<FixedOffset>::try_from(t)
            .map(|t| ("$datetime", t.format("%Y-%m-%dT%H:%M:%S%.f%:z").to_string()))
            .map_err(conv),
        // The wall-clock time in the zone, and the zone: what `datetime('…[Zone]')` reads.
        B::DateTimeZoneId(t) => NaiveDateTime::try_from(t)
            .map(|local| {
                (
                    "$datetime_zone",
                    format!("{}[{}]", local.format(LOCAL_DATETIME), t.tz_id()),
                )
            })
            .map_err(conv),
        _ => return None,
    })
}

/// Typed JSON for templates and `assert`.
pub fn plain(v: &B) -> Result<Value, String> {
    if let Some(t) = temporal_text(v) {
        return t.map(|(_, text)| Value::String(text));
    }
    let props = |m: &neo4rs::BoltMap| -> Result<Value, String> {
        let mut keys: Vec<_> = m.value.keys().collect();
        keys.sort_by(|a, b| a.value.cmp(&b.value));
        keys.into_iter()
            .map(|k| Ok((k.value.clone(), plain(&m.value[k])?)))
            .collect::<Result<Map<_, _>, String>>()
            .map(Value::Object)
    };
    let list = |l: &neo4rs::BoltList| -> Result<Vec<Value>, String> {
        l.value.iter().map(plain).collect()
    };
    Ok(match v {
        B::Null(_) => Value::Null,
        B::Boolean(b) => Value::Bool(b.value),
        B::Integer(i) => json!(i.value),
        B::Float(f) if f.value.is_finite() => json!(f.value),
        B::Float(f) => Value::String(f.value.to_string()),
        B::String(s) => Value::String(s.value.clone()),
        B::Bytes(b) => Value::String(b64(&b.value)),
        B::List(l) => Value::Array(list(l)?),
        B::Map(m) => props(m)?,
        B::Duration(_) => Value::String(iso_duration(duration_parts(v)?)),
        B::Point2D(p) => json!({"srid": p.sr_id.value, "x": p.x.value, "y": p.y.value}),
        B::Point3D(p) => {
            json!({"srid": p.sr_id.value, "x": p.x.value, "y": p.y.value, "z": p.z.value})
        }
        B::Node(n) => json!({
            "id": n.id.value,
            "labels": list(&n.labels)?,
            "properties": props(&n.properties)?,
        }),
        B::Relation(r) => json!({
            "id": r.id.value,
            "type": r.typ.value,
            "start": r.start_node_id.value,
            "end": r.end_node_id.value,
            "properties": props(&r.properties)?,
        }),
        B::UnboundedRelation(r) => json!({
            "id": r.id.value,
            "type": r.typ.value,
            "properties": props(&r.properties)?,
        }),
        B::Path(p) => json!({
            "nodes": list(&p.nodes)?,
            "relationships": list(&p.rels)?,
        }),
        other => return Err(format!("a value lifeboat cannot read: {other:?}")),
    })
}

/// The exact form a backup keeps a property value in.
pub fn tagged(v: &B) -> Result<Value, String> {
    if let Some(t) = temporal_text(v) {
        return t.map(|(tag, text)| json!({ tag: text }));
    }
    Ok(match v {
        B::Null(_) => Value::Null,
        B::Boolean(b) => Value::Bool(b.value),
        B::Integer(i) => json!(i.value),
        B::Float(f) if f.value.is_finite() => json!(f.value),
        B::Float(f) => json!({"$float": f.value.to_string()}),
        B::String(s) => Value::String(s.value.clone()),
        B::Bytes(b) => json!({"$bytes": b64(&b.value)}),
        B::List(l) => Value::Array(l.value.iter().map(tagged).collect::<Result<_, _>>()?),
        B::Duration(_) => json!({"$duration": duration_parts(v)?}),
        B::Point2D(p) => json!({"$point": [p.sr_id.value, p.x.value, p.y.value]}),
        B::Point3D(p) => json!({"$point": [p.sr_id.value, p.x.value, p.y.value, p.z.value]}),
        other => return Err(format!("not a property value: {other:?}")),
    })
}

/// The properties of a node or relationship, tagged, in key order (so a backup of the same
/// graph is the same bytes).
pub fn tagged_map(m: &neo4rs::BoltMap) -> Result<Value, String> {
    let mut keys: Vec<_> = m.value.keys().collect();
    keys.sort_by(|a, b| a.value.cmp(&b.value));
    keys.into_iter()
        .map(|k| {
            tagged(&m.value[k])
                .map(|v| (k.value.clone(), v))
                .map_err(|e| format!("property `{}`: {e}", k.value))
        })
        .collect::<Result<Map<_, _>, _>>()
        .map(Value::Object)
}

/// A value back as what the server should store: the inverse of [`tagged`]. Plain JSON objects
/// that are not a tag become maps (query parameters may be maps).
pub fn untag(v: &Value) -> Result<B, String> {
    Ok(match v {
        Value::Null => B::Null(neo4rs::BoltNull),
        Value::Bool(b) => B::Boolean(neo4rs::BoltBoolean::new(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => B::Integer(neo4rs::BoltInteger::new(i)),
            None => B::Float(neo4rs::BoltFloat::new(
                n.as_f64().ok_or_else(|| format!("{n} is out of range"))?,
            )),
        },
        Value::String(s) => B::String(s.as_str().into()),
        Value::Array(items) => B::List(
            items
                .iter()
                .map(untag)
                .collect::<Result<Vec<_>, _>>()?
                .into(),
        ),
        Value::Object(m) => match tag_of(m) {
            Some((tag, body)) => from_tag(tag, body)?,
            None => B::Map(
                m.iter()
                    .map(|(k, v)| Ok((k.as_str().into(), untag(v)?)))
                    .collect::<Result<neo4rs::BoltMap, String>>()?,
            ),
        },
    })
}

fn tag_of(m: &Map<String, Value>) -> Option<(&str, &Value)> {
    if m.len() != 1 {
        return None;
    }
    let (k, v) = m.iter().next()?;
    TAGS.contains(&k.as_str()).then_some((k.as_str(), v))
}

const TAGS: &[&str] = &[
    "$date",
    "$localtime",
    "$time",
    "$localdatetime",
    "$datetime",
    "$datetime_zone",
    "$duration",
    "$point",
    "$bytes",
    "$float",
];

fn from_tag(tag: &str, body: &Value) -> Result<B, String> {
    let text = || {
        body.as_str()
            .ok_or_else(|| format!("`{tag}` holds text, found {body}"))
    };
    let bad = |e: &dyn std::fmt::Display| format!("`{tag}`: {e}");
    let ints = |n: usize| -> Result<Vec<f64>, String> {
        let items = body
            .as_array()
            .filter(|a| a.len() == n || (tag == "$point" && a.len() == 4))
            .ok_or_else(|| format!("`{tag}` holds a list of {n} numbers, found {body}"))?;
        items
            .iter()
            .map(|x| {
                x.as_f64()
                    .ok_or_else(|| format!("`{tag}`: {x} is not a number"))
            })
            .collect()
    };
    Ok(match tag {
        "$date" => B::Date(
            NaiveDate::parse_from_str(text()?, "%Y-%m-%d")
                .map_err(|e| bad(&e))?
                .into(),
        ),
        "$localtime" => B::LocalTime(
            NaiveTime::parse_from_str(text()?, TIME)
                .map_err(|e| bad(&e))?
                .into(),
        ),
        "$time" => {
            let t = text()?;
            let at = t.rfind(['+', '-', 'Z']).ok_or_else(|| bad(&"no offset"))?;
            let time = NaiveTime::parse_from_str(&t[..at], TIME).map_err(|e| bad(&e))?;
            let off: FixedOffset = if &t[at..] == "Z" {
                FixedOffset::east_opt(0).expect("zero")
            } else {
                t[at..].parse().map_err(|e| bad(&e))?
            };
            B::Time((time, off).into())
        }
        "$localdatetime" => B::LocalDateTime(
            NaiveDateTime::parse_from_str(text()?, LOCAL_DATETIME)
                .map_err(|e| bad(&e))?
                .into(),
        ),
        "$datetime" => B::DateTime(
            DateTime::parse_from_rfc3339(text()?)
                .map_err(|e| bad(&e))?
                .into(),
        ),
        "$datetime_zone" => {
            let t = text()?;
            let (local, zone) = t
                .strip_suffix(']')
                .and_then(|t| t.split_once('['))
                .ok_or_else(|| bad(&"expected `<local date-time>[<zone>]`"))?;
            let local =
                NaiveDateTime::parse_from_str(local, LOCAL_DATETIME).map_err(|e| bad(&e))?;
            B::DateTimeZoneId((local, zone).into())
        }
        "$duration" => {
            let p = body
                .as_array()
                .filter(|a| a.len() == 4)
                .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
                .ok_or_else(|| {
                    format!("`$duration` holds [months, days, seconds, nanoseconds], found {body}")
                })?;
            B::Duration(neo4rs::BoltDuration::new(
                p[0].into(),
                p[1].into(),
                p[2].into(),
                p[3].into(),
            ))
        }
        "$point" => {
            let p = ints(3)?;
            let srid = neo4rs::BoltInteger::new(p[0] as i64);
            let f = neo4rs::BoltFloat::new;
            if p.len() == 4 {
                B::Point3D(neo4rs::BoltPoint3D {
                    sr_id: srid,
                    x: f(p[1]),
                    y: f(p[2]),
                    z: f(p[3]),
                })
            } else {
                B::Point2D(neo4rs::BoltPoint2D {
                    sr_id: srid,
                    x: f(p[1]),
                    y: f(p[2]),
                })
            }
        }
        "$bytes" => B::Bytes(neo4rs::BoltBytes::new(
            base64::engine::general_purpose::STANDARD
                .decode(text()?)
                .map_err(|e| bad(&e))?
                .into(),
        )),
        "$float" => B::Float(neo4rs::BoltFloat::new(
            text()?.parse::<f64>().map_err(|e| bad(&e))?,
        )),
        _ => unreachable!("TAGS lists the tags"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_reads_back_as_itself() {
        let values = [
            json!(null),
            json!(true),
            json!(-9007199254740993_i64),
            json!(1.0),
            json!(-0.5),
            json!("text ✓"),
            json!([1, 2, 3]),
            json!({"$float": "NaN"}),
            json!({"$float": "-inf"}),
            json!({"$bytes": "AAEC/w=="}),
            json!({"$date": "2024-02-29"}),
            json!({"$localtime": "23:59:59.123456789"}),
            json!({"$time": "12:00:00+01:00"}),
            json!({"$localdatetime": "2024-02-29T12:00:00.500"}),
            json!({"$datetime": "2024-02-29T12:00:00.000001+05:30"}),
            json!({"$datetime_zone": "2024-07-01T12:00:00[Europe/Paris]"}),
            json!({"$duration": [14, 3, 4, 500000000]}),
            json!({"$point": [4326, 12.5, 55.25]}),
            json!({"$point": [9157, 1.0, 2.0, 3.0]}),
            json!([{"$date": "2024-01-01"}, {"$date": "2024-01-02"}]),
        ];
        for v in values {
            let b = untag(&v).unwrap();
            let back = tagged(&b).unwrap();
            match (&v, &back) {
                // "-inf" is read by Rust's parser and written in its own spelling.
                (Value::Object(m), Value::Object(_)) if m.contains_key("$float") => {
                    assert!(matches!(b, B::Float(_)));
                }
                _ => assert_eq!(back, v, "{v} came back as {back}"),
            }
        }
    }

    #[test]
    fn plain_json_objects_are_maps_and_bad_tags_are_named() {
        assert!(matches!(untag(&json!({"a": 1})).unwrap(), B::Map(_)));
        assert!(matches!(
            untag(&json!({"$date": "2024-01-01", "x": 1})).unwrap(),
            B::Map(_)
        ));
        let e = untag(&json!({"$date": "29/02/2024"})).unwrap_err();
        assert!(e.starts_with("`$date`:"), "{e}");
        let e = untag(&json!({"$duration": [1, 2]})).unwrap_err();
        assert!(e.contains("[months, days, seconds, nanoseconds]"), "{e}");
    }

    #[test]
    fn durations_read_as_cypher_writes_them() {
        assert_eq!(iso_duration([14, 3, 4, 500_000_000]), "P1Y2M3DT4.5S");
        assert_eq!(iso_duration([0, 0, 0, 0]), "PT0S");
        assert_eq!(iso_duration([0, 0, 3_725, 0]), "PT1H2M5S");
        assert_eq!(iso_duration([0, 1, 0, 0]), "P1D");
        assert_eq!(iso_duration([0, 0, -90, 0]), "PT-1M-30S");
    }

    #[test]
    fn plain_values_are_what_templates_expect() {
        let d = untag(&json!({"$date": "2024-02-29"})).unwrap();
        assert_eq!(plain(&d).unwrap(), json!("2024-02-29"));
        let p = untag(&json!({"$point": [4326, 1.5, 2.5]})).unwrap();
        assert_eq!(
            plain(&p).unwrap(),
            json!({"srid": 4326, "x": 1.5, "y": 2.5})
        );
        let dur = untag(&json!({"$duration": [0, 0, 90, 0]})).unwrap();
        assert_eq!(plain(&dur).unwrap(), json!("PT1M30S"));
    }
}
