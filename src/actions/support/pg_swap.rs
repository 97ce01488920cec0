//! Restoring beside a database and swapping it in: the scratch database's name, its creation
//! with the target's encoding, locale, tablespace and owner, and the swap itself.
//!
//! The swap is one transaction: end the target's sessions, rename the target to the kept name,
//! rename the scratch database to the target's name, and carry over what a rename leaves behind
//! (database-level grants, `ALTER DATABASE ... SET` settings, connection limit, comment: they
//! belong to the database's oid, not its name). PostgreSQL renames databases transactionally, so
//! a crash or kill at any instant leaves either the old or the new database under the target's
//! name, never neither, and never a target that refuses connections.

use std::time::Duration;

use crate::actions::ActionError;
use crate::actions::postgres::{self as pg, PgTarget, ident, literal};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
const MAX_NAME: usize = 63;

/// `<db>__<tag>_<id>`, cut to fit 63 bytes: the database's name is shortened (on a character
/// boundary) before the tag and id are, so the name stays unique to the run and step.
pub fn derived_name(db: &str, tag: &str, id: &str) -> String {
    let tail = format!("__{tag}_{id}");
    let room = MAX_NAME.saturating_sub(tail.len());
    let mut head = String::new();
    for c in db.chars() {
        if head.len() + c.len_utf8() > room {
            break;
        }
        head.push(c);
    }
    format!("{head}{tail}")
}

/// A short id for a run and step, the same for every attempt: a leftover from a killed attempt
/// has the name the next attempt (or `resume`) looks for and drops.
pub fn run_step_id(run_id: &str, step: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("{run_id}/{step}").as_bytes());
    crate::runlog::hex(&d[..5])
}

/// The maintenance database to connect to for CREATE, DROP and RENAME of `db`: one cannot
/// rename the database one is connected to.
pub fn admin_for(target: &PgTarget, db: &str) -> PgTarget {
    let mut admin = target.clone();
    admin.config.dbname(if db == "postgres" {
        "template1"
    } else {
        "postgres"
    });
    admin
}

/// What the target database is, for creating its twin and for the swap.
#[derive(Debug, Clone)]
pub struct Shape {
    pub oid: u32,
    pub owner: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    pub provider: String,
    pub icu_locale: Option<String>,
    pub tablespace: String,
}

pub async fn shape(
    client: &tokio_postgres::Client,
    db: &str,
) -> Result<Option<Shape>, ActionError> {
    let row = client
        .query_opt(
            "select d.oid, r.rolname::text, pg_encoding_to_char(d.encoding)::text, d.datcollate::text, d.datctype::text, \
                    d.datlocprovider::text, d.daticulocale::text, t.spcname::text \
             from pg_database d join pg_roles r on r.oid = d.datdba join pg_tablespace t on t.oid = d.dattablespace \
             where d.datname = $1",
            &[&db],
        )
        .await
        .map_err(|e| pg::classify(&e, &format!("reading database {db}")))?;
    Ok(row.map(|r| Shape {
        oid: r.get(0),
        owner: r.get(1),
        encoding: r.get(2),
        collate: r.get(3),
        ctype: r.get(4),
        provider: r.get(5),
        icu_locale: r.get(6),
        tablespace: r.get(7),
    }))
}

/// Creates `name` as the target's twin (encoding, locale, tablespace, owner), from template0 so
/// that nothing from template1 gets in the way of the restore. Without a target (a rebuilt
/// server) it takes the server's defaults.
pub async fn create_twin(
    client: &tokio_postgres::Client,
    name: &str,
    like: Option<&Shape>,
) -> Result<(), ActionError> {
    let mut sql = format!("create database {} template template0", ident(name));
    if let Some(s) = like {
        sql.push_str(&format!(
            " owner {} encoding {} tablespace {}",
            ident(&s.owner),
            literal(&s.encoding),
            ident(&s.tablespace)
        ));
        if s.provider == "i" {
            sql.push_str(&format!(
                " locale_provider icu icu_locale {} lc_collate {} lc_ctype {}",
                literal(s.icu_locale.as_deref().unwrap_or("und")),
                literal(&s.collate),
                literal(&s.ctype)
            ));
        } else {
            sql.push_str(&format!(
                " lc_collate {} lc_ctype {}",
                literal(&s.collate),
                literal(&s.ctype)
            ));
        }
    }
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| pg::classify(&e, &format!("creating the scratch database {name}")))
}

/// Drops `name` if it is there, ending its sessions.
pub async fn drop_if_exists(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<(), ActionError> {
    client
        .batch_execute(&format!(
            "drop database if exists {} with (force)",
            ident(name)
        ))
        .await
        .map_err(|e| pg::classify(&e, &format!("dropping {name}")))
}

pub async fn oid_of(client: &tokio_postgres::Client, db: &str) -> Result<Option<u32>, ActionError> {
    Ok(client
        .query_opt("select oid from pg_database where datname = $1", &[&db])
        .await
        .map_err(|e| pg::classify(&e, &format!("looking up database {db}")))?
        .map(|r| r.get(0)))
}

/// What a rename does not carry: read from the old database, as statements for the new one.
pub async fn carried_over(
    tx: &impl tokio_postgres::GenericClient,
    old_oid: u32,
    new_name: &str,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let on = ident(new_name);
    let mut out = Vec::new();
    let row = tx
        .query_one(
            "select d.datacl is null, d.datconnlimit, shobj_description(d.oid, 'pg_database'), r.rolname::text \
             from pg_database d join pg_roles r on r.oid = d.datdba where d.oid = $1",
            &[&old_oid],
        )
        .await?;
    let default_acl: bool = row.get(0);
    let connlimit: i32 = row.get(1);
    let comment: Option<String> = row.get(2);
    let owner: String = row.get(3);
    if !default_acl {
        // The new database starts with the default ACL (PUBLIC may CONNECT and TEMP): clear it,
        // then grant exactly what the old one had.
        out.push(format!("revoke all on database {on} from public"));
        for r in tx
            .query(
                "select coalesce(g.rolname::text, 'PUBLIC'), a.privilege_type, a.is_grantable, a.grantee = d.datdba \
                 from pg_database d, aclexplode(d.datacl) a left join pg_roles g on g.oid = a.grantee \
                 where d.oid = $1 order by 1, 2",
                &[&old_oid],
            )
            .await
            ?
        {
            let (grantee, privilege, grantable, is_owner): (String, String, bool, bool) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            if is_owner {
                continue; // the owner's own rights come with ownership
            }
            let to = if grantee == "PUBLIC" {
                grantee
            } else {
                ident(&grantee)
            };
            out.push(format!(
                "grant {privilege} on database {on} to {to}{}",
                if grantable { " with grant option" } else { "" }
            ));
        }
        // An owner who revoked their own rights (rare, but possible) keeps them revoked.
        let owner_has: Vec<String> = tx
            .query(
                "select a.privilege_type from pg_database d, aclexplode(d.datacl) a where d.oid = $1 and a.grantee = d.datdba",
                &[&old_oid],
            )
            .await
            ?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for p in ["CREATE", "TEMPORARY", "CONNECT"] {
            if !owner_has.iter().any(|h| h == p) {
                out.push(format!(
                    "revoke {p} on database {on} from {}",
                    ident(&owner)
                ));
            }
        }
    }
    if connlimit != -1 {
        out.push(format!("alter database {on} connection limit {connlimit}"));
    }
    if let Some(c) = comment {
        out.push(format!("comment on database {on} is {}", literal(&c)));
    }
    for r in tx
        .query(
            "select r.rolname::text, s.setconfig from pg_db_role_setting s left join pg_roles r on r.oid = s.setrole \
             where s.setdatabase = $1 order by 1 nulls first",
            &[&old_oid],
        )
        .await
        ?
    {
        let role: Option<String> = r.get(0);
        let config: Vec<String> = r.get(1);
        for item in config {
            let Some((name, value)) = item.split_once('=') else {
                continue;
            };
            let target = match &role {
                Some(role) => format!("alter role {} in database {on}", ident(role)),
                None => format!("alter database {on}"),
            };
            out.push(format!("{target} set {} to {}", ident(name), setting_value(name, value)));
        }
    }
    Ok(out)
}

/// A stored setting's value as SQL. List settings (search_path and the like) are stored as
/// their elements joined with ", ", each double-quoted where needed; each element becomes its own
/// literal, as pg_dump does, or `"$user", public` would come back as one odd schema name.
fn setting_value(name: &str, value: &str) -> String {
    const LISTS: &[&str] = &[
        "search_path",
        "temp_tablespaces",
        "session_preload_libraries",
        "local_preload_libraries",
        "shared_preload_libraries",
    ];
    if !LISTS.contains(&name.to_ascii_lowercase().as_str()) {
        return literal(value);
    }
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => {
                items.push(std::mem::take(&mut cur).trim().to_string());
            }
            c => cur.push(c),
        }
    }
    items.push(cur.trim().to_string());
    items
        .iter()
        .map(|i| literal(i))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The outcome of a swap.
pub struct Swapped {
    /// Sessions of the target that were ended.
    pub ended_sessions: i64,
    /// The kept name of the old database, when there was one.
    pub kept: Option<String>,
}

/// Puts `scratch` in the place of `target`, keeping the old one as `kept`, and (with `carry`)
/// gives it the old one's grants and settings; without a `scratch`, only moves `target` aside
/// to `kept`. One transaction: on any
/// failure (or a kill of this process) nothing has changed. Sessions that connect to the target
/// between their ending and the rename make the rename fail; it is tried again a few times.
pub async fn swap_in(
    admin: &PgTarget,
    target: &str,
    scratch: Option<&str>,
    kept: &str,
    carry: bool,
) -> Result<Swapped, ActionError> {
    let doing = match scratch {
        Some(_) => "swapping the restored database in".to_string(),
        None => format!("moving {target} aside"),
    };
    let mut client = admin.connect().await?;
    let mut last = None;
    for _ in 0..10 {
        match swap_once(&mut client, target, scratch, kept, carry).await {
            Ok(s) => return Ok(s),
            // 55006: object_in_use ("being accessed by other users").
            Err(e) if e.code().is_some_and(|c| c.code() == "55006") => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(pg::classify(&e, &doing)),
        }
    }
    Err(ActionError::transient(format!(
        "{doing}: sessions kept connecting to {target}: {}; nothing was swapped (stop the writers first)",
        last.map(|e| pg::describe(&e)).unwrap_or_default()
    )))
}

async fn swap_once(
    client: &mut tokio_postgres::Client,
    target: &str,
    scratch: Option<&str>,
    kept: &str,
    carry: bool,
) -> Result<Swapped, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let old: Option<u32> = tx
        .query_opt("select oid from pg_database where datname = $1", &[&target])
        .await?
        .map(|r| r.get(0));
    let mut ended = 0;
    if let Some(old) = old {
        ended = tx
            .query_one(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity where datid = $1 and pid <> pg_backend_pid()",
                &[&old],
            )
            .await?
            .get(0);
        tx.batch_execute(&format!(
            "alter database {} rename to {}",
            ident(target),
            ident(kept)
        ))
        .await?;
    }
    if let Some(scratch) = scratch {
        tx.batch_execute(&format!(
            "alter database {} rename to {}",
            ident(scratch),
            ident(target)
        ))
        .await?;
    }
    if let Some(old) = old.filter(|_| carry) {
        for s in carried_over(&tx, old, target).await? {
            tx.batch_execute(&s).await?;
        }
    }
    tx.commit().await?;
    Ok(Swapped {
        ended_sessions: ended,
        kept: old.map(|_| kept.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_fit_and_stay_distinct() {
        assert_eq!(
            derived_name("orders", "before", "ab12"),
            "orders__before_ab12"
        );
        let long = "é".repeat(40);
        let n = derived_name(&long, "restore", "0123456789");
        assert!(n.len() <= 63, "{n}");
        assert!(n.ends_with("__restore_0123456789"));
        assert_ne!(run_step_id("r1", "restore"), run_step_id("r1", "restore2"));
        assert_eq!(run_step_id("r1", "restore").len(), 10);
    }

    #[test]
    fn list_settings_come_back_as_lists() {
        assert_eq!(
            setting_value("search_path", "\"$user\", public"),
            "'$user', 'public'"
        );
        assert_eq!(
            setting_value("search_path", "\"a,b\", \"x\"\"y\""),
            "'a,b', 'x\"y'"
        );
        assert_eq!(setting_value("work_mem", "64MB"), "'64MB'");
        assert_eq!(setting_value("application_name", "it's"), "'it''s'");
    }
}
