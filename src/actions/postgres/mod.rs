//! What the PostgreSQL actions share: connecting (TLS through rustls/ring when the URL asks for
//! it), classifying errors as transient or not, and turning rows into typed JSON.

pub mod backup;
pub mod promote;
pub mod query;
pub mod restore;
pub mod resume_writers;
pub mod start_cluster;
pub mod stop_cluster;
pub mod stop_writers;
pub mod swap_back;

use std::time::Duration;

use serde_json::{Map, Value};
use tokio_postgres::types::{FromSql, ToSql, Type};

use crate::actions::{ActionError, Exec};

/// A rendered `postgres` connection.
#[derive(Debug, Clone)]
pub struct PgTarget {
    pub ca_file: Option<String>,
    pub password: Option<String>,
    pub config: tokio_postgres::Config,
}

impl PgTarget {
    pub fn from_exec(
        cx: &Exec<'_>,
        name: &str,
        database: Option<&str>,
    ) -> Result<PgTarget, ActionError> {
        let fields = (cx.connection)(name).map_err(ActionError::permanent)?;
        let url = fields
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| ActionError::permanent(format!("connection `{name}` has no url")))?;
        let password = fields
            .get("password")
            .and_then(Value::as_str)
            .map(String::from);
        let ca_file = fields
            .get("ca_file")
            .and_then(Value::as_str)
            .map(String::from);
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            ActionError::permanent(format!("connection `{name}`: not a PostgreSQL URL: {e}"))
        })?;
        if let Some(p) = &password {
            config.password(p.as_bytes());
        }
        if let Some(db) = database {
            config.dbname(db);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("lifeboat");
        // lifeboat's own sessions may write while `postgres.stop_writers` has made the
        // database read-only for everyone else (a restore runs exactly then).
        config.options("-c default_transaction_read_only=off");
        Ok(PgTarget {
            ca_file,
            password,
            config,
        })
    }

    /// Environment for pg_dump/pg_restore: the password, and the same read-only exemption.
    pub fn tool_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (
                "PGOPTIONS",
                "-c default_transaction_read_only=off".to_string(),
            ),
            ("PGCONNECT_TIMEOUT", "10".into()),
        ];
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD", p.clone()));
        }
        env
    }

    pub fn database(&self) -> String {
        self.config
            .get_dbname()
            .map(String::from)
            .or_else(|| self.config.get_user().map(String::from))
            .unwrap_or_else(|| "postgres".into())
    }

    /// The URL for pg_dump/pg_restore with this target's database; the password goes by
    /// environment, never on a command line.
    pub fn url_for(&self, database: &str) -> String {
        let mut c = self.config.clone();
        c.dbname(database);
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = c.get_ports().first().copied().unwrap_or(5432);
        let user = c.get_user().unwrap_or("postgres");
        let ssl = match c.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => "disable",
            tokio_postgres::config::SslMode::Require => "require",
            _ => "prefer",
        };
        format!(
            "postgresql://{}@{}:{port}/{}?sslmode={ssl}&application_name=lifeboat",
            pct(user),
            if host.starts_with('/') {
                format!("[{}]", pct(&host))
            } else {
                host
            },
            pct(database)
        )
    }

    /// Connects; the connection is driven by its own task, which ends when the client is dropped.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, ActionError> {
        use tokio_postgres::config::SslMode;
        let fail = |e: tokio_postgres::Error| classify(&e, "connecting");
        if self.config.get_ssl_mode() == SslMode::Disable {
            let (client, conn) = self
                .config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(fail)?;
            tokio::spawn(conn);
            Ok(client)
        } else {
            let tls =
                tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(self.ca_file.as_deref())?);
            let (client, conn) = self.config.connect(tls).await.map_err(fail)?;
            tokio::spawn(conn);
            Ok(client)
        }
    }
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// TLS with the ring provider, trusting `ca_file` when given, else the public webpki roots.
pub fn tls_config(ca_file: Option<&str>) -> Result<rustls::ClientConfig, ActionError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| ActionError::permanent(format!("cannot read ca_file {path}: {e}")))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    ActionError::permanent(format!("ca_file {path}: not PEM certificates: {e}"))
                })?;
                roots
                    .add(cert)
                    .map_err(|e| ActionError::permanent(format!("ca_file {path}: {e}")))?;
            }
            if roots.is_empty() {
                return Err(ActionError::permanent(format!(
                    "ca_file {path} holds no certificate"
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Connection trouble, serialization failures, deadlocks, shutdowns and resource limits pass;
/// everything else (syntax, permissions, constraint violations) will fail the same way again.
pub fn classify(e: &tokio_postgres::Error, doing: &str) -> ActionError {
    let msg = describe(e);
    match e.code() {
        Some(code) => {
            let c = code.code();
            let transient = c.starts_with("08")
                || c.starts_with("53")
                || c.starts_with("57P")
                || c == "40001"
                || c == "40P01"
                || c == "55P03";
            let msg = format!("{doing}: {msg} (SQLSTATE {c})");
            if transient {
                ActionError::transient(msg)
            } else {
                ActionError::permanent(msg)
            }
        }
        // No SQLSTATE: the connection itself (refused, reset, timed out) or the protocol.
        None => {
            let auth = msg.contains("password")
                || msg.contains("authentication")
                || msg.to_lowercase().contains("certificate");
            let msg = format!("{doing}: {msg}");
            if auth {
                ActionError::permanent(msg)
            } else {
                ActionError::transient(msg)
            }
        }
    }
}

/// tokio-postgres's Display hides the server's message behind "db error"; show it.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_string();
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        return s;
    }
    crate::actions::support::error_chain(e)
}

/// Converts JSON values to the types the statement's parameters have.
/// A param bound to the type the server asks for.
pub type Bound = Box<dyn ToSql + Sync + Send>;

/// Bound params as tokio-postgres takes them.
pub fn refs(args: &[Bound]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|b| &**b as _).collect()
}

pub fn bind(params: &[Value], types: &[Type]) -> Result<Vec<Bound>, ActionError> {
    if params.len() != types.len() {
        return Err(ActionError::permanent(format!(
            "the statement takes {} parameter(s), `params` has {}",
            types.len(),
            params.len()
        )));
    }
    params
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (v, ty))| {
            let bad = || {
                ActionError::permanent(format!(
                    "param ${}: {v} does not fit type {ty}; cast it in SQL (`${}::text`)",
                    i + 1,
                    i + 1
                ))
            };
            let b: Box<dyn ToSql + Sync + Send> = match (ty, v) {
                (_, Value::Null) => Box::new(None::<String>),
                (&Type::BOOL, Value::Bool(b)) => Box::new(*b),
                (&Type::INT2, Value::Number(n)) => {
                    Box::new(i16::try_from(n.as_i64().ok_or_else(bad)?).map_err(|_| bad())?)
                }
                (&Type::INT4, Value::Number(n)) => {
                    Box::new(i32::try_from(n.as_i64().ok_or_else(bad)?).map_err(|_| bad())?)
                }
                (&Type::INT8, Value::Number(n)) => Box::new(n.as_i64().ok_or_else(bad)?),
                (&Type::FLOAT4, Value::Number(n)) => Box::new(n.as_f64().ok_or_else(bad)? as f32),
                (&Type::FLOAT8, Value::Number(n)) => Box::new(n.as_f64().ok_or_else(bad)?),
                (
                    &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME | &Type::UNKNOWN,
                    Value::String(s),
                ) => Box::new(s.clone()),
                (&Type::TEXT | &Type::VARCHAR, other) => Box::new(other.to_string()),
                (&Type::JSON | &Type::JSONB, other) => Box::new(other.clone()),
                (&Type::NUMERIC, Value::Number(n)) => {
                    Box::new(NumericParam::parse(&n.to_string()).ok_or_else(bad)?)
                }
                (&Type::NUMERIC, Value::String(s)) => {
                    Box::new(NumericParam::parse(s).ok_or_else(bad)?)
                }
                _ => return Err(bad()),
            };
            Ok(b)
        })
        .collect()
}

/// A row as an object of column name to typed JSON value.
pub fn row_json(row: &tokio_postgres::Row) -> Result<Map<String, Value>, ActionError> {
    let mut out = Map::new();
    for (i, col) in row.columns().iter().enumerate() {
        let ty = col.type_();
        let unreadable = || {
            ActionError::permanent(format!(
                "column `{}` has type {ty}, which lifeboat cannot read; cast it (`{}::text`)",
                col.name(),
                col.name()
            ))
        };
        let v: Value = match *ty {
            Type::BOOL => row
                .get::<_, Option<bool>>(i)
                .map_or(Value::Null, Value::from),
            Type::INT2 => row
                .get::<_, Option<i16>>(i)
                .map_or(Value::Null, Value::from),
            Type::INT4 => row
                .get::<_, Option<i32>>(i)
                .map_or(Value::Null, Value::from),
            Type::INT8 => row
                .get::<_, Option<i64>>(i)
                .map_or(Value::Null, Value::from),
            Type::OID => row
                .get::<_, Option<u32>>(i)
                .map_or(Value::Null, Value::from),
            Type::FLOAT4 => row
                .get::<_, Option<f32>>(i)
                .map_or(Value::Null, |f| float(f as f64)),
            Type::FLOAT8 => row.get::<_, Option<f64>>(i).map_or(Value::Null, float),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => row
                .get::<_, Option<String>>(i)
                .map_or(Value::Null, Value::from),
            Type::JSON | Type::JSONB => row.get::<_, Option<Value>>(i).unwrap_or(Value::Null),
            Type::TIMESTAMPTZ => row
                .get::<_, Option<jiff::Timestamp>>(i)
                .map_or(Value::Null, |t| t.to_string().into()),
            Type::TIMESTAMP => row
                .get::<_, Option<jiff::civil::DateTime>>(i)
                .map_or(Value::Null, |t| t.to_string().into()),
            Type::DATE => row
                .get::<_, Option<jiff::civil::Date>>(i)
                .map_or(Value::Null, |t| t.to_string().into()),
            Type::NUMERIC => row
                .get::<_, Option<Numeric>>(i)
                .map_or(Value::Null, |n| n.0),
            Type::PG_LSN => row
                .get::<_, Option<tokio_postgres::types::PgLsn>>(i)
                .map_or(Value::Null, |l| l.to_string().into()),
            Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::NAME_ARRAY => row
                .get::<_, Option<Vec<Option<String>>>>(i)
                .map_or(Value::Null, |v| v.into()),
            Type::INT4_ARRAY => row
                .get::<_, Option<Vec<Option<i32>>>>(i)
                .map_or(Value::Null, |v| v.into()),
            Type::INT8_ARRAY => row
                .get::<_, Option<Vec<Option<i64>>>>(i)
                .map_or(Value::Null, |v| v.into()),
            _ => return Err(unreadable()),
        };
        out.insert(col.name().to_string(), v);
    }
    Ok(out)
}

/// `numeric`, decoded from its binary form: a JSON number when it is one exactly, else a string.
struct Numeric(Value);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let rd = |i: usize| -> Result<i16, Box<dyn std::error::Error + Sync + Send>> {
            raw.get(i..i + 2)
                .map(|b| i16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "short numeric".into())
        };
        let ndigits = rd(0)? as usize;
        let weight = rd(2)? as i32;
        let sign = rd(4)? as u16;
        let dscale = rd(6)? as usize;
        if sign == 0xC000 {
            return Ok(Numeric(Value::String("NaN".into())));
        }
        let digits: Vec<i16> = (0..ndigits)
            .map(|k| rd(8 + 2 * k))
            .collect::<Result<_, _>>()?;
        let mut int = String::new();
        let mut frac = String::new();
        for pos in 0..=weight.max(0) {
            let d = if pos <= weight {
                digits.get(pos as usize).copied().unwrap_or(0)
            } else {
                0
            };
            if int.is_empty() {
                int.push_str(&d.to_string())
            } else {
                int.push_str(&format!("{d:04}"))
            }
        }
        if weight < 0 {
            int = "0".into();
        }
        let mut k = (weight + 1).max(0) as usize;
        let mut lead = if weight < -1 {
            (-1 - weight) as usize
        } else {
            0
        };
        while frac.len() < dscale {
            if lead > 0 {
                frac.push_str("0000");
                lead -= 1;
            } else {
                let d = digits.get(k).copied().unwrap_or(0);
                frac.push_str(&format!("{d:04}"));
                k += 1;
            }
        }
        frac.truncate(dscale);
        let neg = if sign == 0x4000 { "-" } else { "" };
        let text = if frac.is_empty() {
            format!("{neg}{int}")
        } else {
            format!("{neg}{int}.{frac}")
        };
        // A JSON number when it reads back as the same value (trailing zeros are only scale);
        // otherwise the exact text, never a silently rounded number.
        let canonical = if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text.clone()
        };
        let n: Option<serde_json::Number> = canonical.parse().ok();
        Ok(Numeric(match n {
            Some(num)
                if num.to_string() == canonical
                    || (!canonical.contains('.')
                        && num.as_i64().map(|i| i.to_string()) == Some(canonical.clone())) =>
            {
                Value::Number(num)
            }
            _ => Value::String(text),
        }))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// A decimal for a `numeric` parameter, in PostgreSQL's binary form (base-10000 digits).
#[derive(Debug)]
struct NumericParam {
    negative: bool,
    weight: i16,
    dscale: u16,
    digits: Vec<i16>,
}

impl NumericParam {
    fn parse(text: &str) -> Option<NumericParam> {
        let t = text.trim();
        let (negative, t) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        if t.contains(['e', 'E']) {
            return None;
        }
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let int = int.trim_start_matches('0');
        let pad_int = (4 - int.len() % 4) % 4;
        let pad_frac = (4 - frac.len() % 4) % 4;
        let all = format!("{}{int}{frac}{}", "0".repeat(pad_int), "0".repeat(pad_frac));
        let mut digits: Vec<i16> = all
            .as_bytes()
            .chunks(4)
            .map(|c| {
                std::str::from_utf8(c)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0)
            })
            .collect();
        let mut weight = ((int.len() + pad_int) / 4) as i16 - 1;
        while digits.first() == Some(&0) {
            digits.remove(0);
            weight -= 1;
        }
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            weight = 0;
        }
        Some(NumericParam {
            negative,
            weight,
            dscale: frac.len() as u16,
            digits,
        })
    }
}

impl ToSql for NumericParam {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use bytes::BufMut;
        out.put_i16(self.digits.len() as i16);
        out.put_i16(self.weight);
        out.put_u16(if self.negative && !self.digits.is_empty() {
            0x4000
        } else {
            0
        });
        out.put_u16(self.dscale);
        for d in &self.digits {
            out.put_i16(*d);
        }
        Ok(tokio_postgres::types::IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
    tokio_postgres::types::to_sql_checked!();
}

/// Quotes an identifier for SQL.
/// A float as JSON; `Infinity`, `-Infinity` and `NaN` (which JSON cannot hold, and which would
/// otherwise become null) as PostgreSQL writes them.
fn float(f: f64) -> Value {
    match serde_json::Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::from("NaN"),
        None if f > 0.0 => Value::from("Infinity"),
        None => Value::from("-Infinity"),
    }
}

pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a literal for SQL (for the few statements that take no bind parameters: ALTER, GRANT).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
