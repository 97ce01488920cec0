//! Secrets at run time: resolved from env or file when a run starts (never before, never stored),
//! and kept out of everything the run writes.
//!
//! Two mechanisms, because neither is enough alone:
//! - Taint: a template that reads `secrets` yields a tainted value. Tainted inputs are recorded as
//!   `***`, and whatever text the template produced (upper-cased, base64'd, sliced, JSON-encoded,
//!   anything) is registered with the [`Masker`].
//! - Masking: every event passes through the masker before it is written or shown. It replaces
//!   each secret, the forms the template filters can turn it into, and every tainted text seen so
//!   far. This is what catches a secret echoed back by a command or a server.

use std::sync::RwLock;

use indexmap::IndexMap;
use serde_json::Value;

use crate::runbook::{SecretSource, ValidRunbook};

pub const MASK: &str = "***";

/// A secret shorter than this cannot be masked without mangling ordinary text, so it is refused.
pub const MIN_SECRET_LEN: usize = 4;

/// Resolved secret values, by name.
#[derive(Default)]
pub struct Secrets {
    pub values: IndexMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.values.keys()).finish()
    }
}

/// Reads every declared secret. The error names the secret and its source, never a value.
pub fn resolve(rb: &ValidRunbook) -> Result<Secrets, String> {
    let mut values = IndexMap::new();
    for (name, source) in &rb.secrets {
        values.insert(name.clone(), read(name, source)?);
    }
    Ok(Secrets { values })
}

/// The secrets this process can read, without the others: enough to mask what it writes when
/// it needs no secret itself (`approve`).
pub fn resolve_available(rb: &ValidRunbook) -> Secrets {
    let values = rb
        .secrets
        .iter()
        .filter_map(|(name, source)| Some((name.clone(), read(name, source).ok()?)))
        .collect();
    Secrets { values }
}

fn read(name: &str, source: &SecretSource) -> Result<String, String> {
    let value = match source {
        SecretSource::Env(var) => std::env::var(var).map_err(|_| {
            format!("secret `{name}`: environment variable `{var}` is not set (or not UTF-8)")
        })?,
        SecretSource::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("secret `{name}`: cannot read `{path}`: {e}"))?;
            // Files written with `echo` end in a newline that is not part of the secret.
            text.strip_suffix('\n').unwrap_or(&text).to_string()
        }
    };
    if value.chars().count() < MIN_SECRET_LEN {
        return Err(format!(
            "secret `{name}` is shorter than {MIN_SECRET_LEN} characters: lifeboat could not mask it in output without mangling ordinary text"
        ));
    }
    Ok(value)
}

/// A piece of a secret at least this long is masked wherever it appears: a shell that splits
/// an unquoted secret at `&` or a space prints pieces, not the whole.
pub const FRAGMENT: usize = 6;

/// Replaces secret text with `***`. Shared by every task of a run; it only grows.
#[derive(Default)]
pub struct Masker {
    /// Longest first, so a longer form is replaced before a shorter one inside it.
    patterns: RwLock<Vec<String>>,
    /// The secrets and their derived forms, whose pieces are masked too.
    sources: Vec<String>,
    /// Every FRAGMENT-byte window of `sources`: where a match may start.
    grams: std::collections::HashSet<Vec<u8>>,
}

/// Every masker alive in this process. What lifeboat writes outside its events (the
/// diagnostics of `-v`, from client libraries that may log a request with a secret in it) is
/// scrubbed by all of them: [`scrub_diagnostics`].
static LIVE: std::sync::Mutex<Vec<std::sync::Weak<Masker>>> = std::sync::Mutex::new(Vec::new());

/// Scrubs text written outside a run's events with every live masker.
pub fn scrub_diagnostics(text: &str) -> String {
    let mut live = LIVE.lock().expect("maskers lock");
    live.retain(|m| m.strong_count() > 0);
    live.iter()
        .filter_map(std::sync::Weak::upgrade)
        .fold(text.to_string(), |t, m| m.scrub(&t))
}

impl Masker {
    /// A masker for these secrets, registered for [`scrub_diagnostics`] while it lives.
    pub fn new(secrets: &Secrets) -> std::sync::Arc<Masker> {
        let m = std::sync::Arc::new(Masker::unregistered(secrets));
        LIVE.lock()
            .expect("maskers lock")
            .push(std::sync::Arc::downgrade(&m));
        m
    }

    fn unregistered(secrets: &Secrets) -> Masker {
        let env = crate::runbook::templates::environment();
        let mut sources = Vec::new();
        for v in secrets.values.values() {
            sources.push(v.clone());
            sources.extend(derived_forms(&env, v));
        }
        let grams = sources
            .iter()
            .flat_map(|s| s.as_bytes().windows(FRAGMENT).map(<[u8]>::to_vec))
            .collect();
        let m = Masker {
            patterns: RwLock::default(),
            sources: sources.clone(),
            grams,
        };
        for s in &sources {
            m.add(s);
        }
        m
    }

    /// Registers a text produced from a secret. Texts shorter than [`MIN_SECRET_LEN`] are not
    /// masked in free text (they would mangle it); inputs that held them are still `***`.
    pub fn add(&self, text: &str) {
        if text.chars().count() < MIN_SECRET_LEN {
            return;
        }
        let mut p = self.patterns.write().expect("masker lock");
        if p.iter().any(|x| x == text) {
            return;
        }
        p.push(text.to_string());
        p.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.read().expect("masker lock").is_empty()
    }

    pub fn scrub(&self, text: &str) -> String {
        let out = self.scrub_whole(text);
        self.scrub_fragments(&out).unwrap_or(out)
    }

    fn scrub_whole(&self, text: &str) -> String {
        let p = self.patterns.read().expect("masker lock");
        let mut out = text.to_string();
        for pat in p.iter() {
            if out.contains(pat.as_str()) {
                out = out.replace(pat.as_str(), MASK);
            }
        }
        out
    }

    /// Masks the longest piece of a secret (or of a derived form) starting at each place where a
    /// FRAGMENT-long window matches one. `None` when there is nothing to mask.
    fn scrub_fragments(&self, text: &str) -> Option<String> {
        let bytes = text.as_bytes();
        if self.grams.is_empty() || bytes.len() < FRAGMENT {
            return None;
        }
        let piece_of_a_source = |piece: &str| self.sources.iter().any(|s| s.contains(piece));
        let mut out = String::new();
        let mut copied = 0;
        let mut i = 0;
        while i + FRAGMENT <= bytes.len() {
            if !text.is_char_boundary(i) || !self.grams.contains(&bytes[i..i + FRAGMENT]) {
                i += 1;
                continue;
            }
            let mut j = i + FRAGMENT;
            while j < bytes.len() {
                let mut next = j + 1;
                while next < bytes.len() && !text.is_char_boundary(next) {
                    next += 1;
                }
                if piece_of_a_source(&text[i..next]) {
                    j = next;
                } else {
                    break;
                }
            }
            if !text.is_char_boundary(j) || !piece_of_a_source(&text[i..j]) {
                i += 1;
                continue;
            }
            out.push_str(&text[copied..i]);
            out.push_str(MASK);
            copied = j;
            i = j;
        }
        if copied == 0 {
            return None;
        }
        out.push_str(&text[copied..]);
        Some(out)
    }

    /// Scrubs every string (and object key) inside a JSON value.
    pub fn scrub_value(&self, v: &mut Value) {
        if self.is_empty() {
            return;
        }
        match v {
            Value::String(s) => {
                let clean = self.scrub(s);
                if clean != *s {
                    *s = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.scrub_value(i)),
            // Keys are masked only where a whole secret (or a whole derived form) appears: the
            // event's own field names must survive a secret that happens to contain a word.
            Value::Object(map) => {
                let dirty = map.keys().any(|k| self.scrub_whole(k) != *k);
                if dirty {
                    let old = std::mem::take(map);
                    for (k, mut val) in old {
                        self.scrub_value(&mut val);
                        map.insert(self.scrub_whole(&k), val);
                    }
                } else {
                    map.values_mut().for_each(|i| self.scrub_value(i));
                }
            }
            _ => {}
        }
    }
}

/// What the template filters turn a secret into, for the forms that need no template to appear
/// (a script that base64-encodes its input, a server that echoes a URL-encoded query).
fn derived_forms(env: &minijinja::Environment<'_>, secret: &str) -> Vec<String> {
    const FILTERS: &[&str] = &[
        "upper",
        "lower",
        "title",
        "capitalize",
        "trim",
        "reverse",
        "b64encode",
        "urlencode",
        "tojson",
    ];
    let ctx = minijinja::context! { s => secret };
    let mut forms = Vec::new();
    for f in FILTERS {
        if let Ok(out) = env.render_str(&format!("{{{{ s | {f} }}}}"), &ctx) {
            forms.push(out.trim_matches('"').to_string());
            forms.push(out);
        }
    }
    // JSON-escaped without the quotes: how it appears inside a larger JSON text.
    let json = serde_json::to_string(secret).unwrap_or_default();
    forms.push(json.trim_matches('"').to_string());
    use base64::Engine;
    for engine in [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ] {
        forms.push(engine.encode(secret));
    }
    forms.retain(|f| f != secret);
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(secret: &str) -> std::sync::Arc<Masker> {
        let mut s = Secrets::default();
        s.values.insert("pw".into(), secret.into());
        Masker::new(&s)
    }

    #[test]
    fn masks_the_secret_and_what_filters_make_of_it() {
        let m = masker("Hunter2 pass/word");
        let env = crate::runbook::templates::environment();
        for f in [
            "",
            "|upper",
            "|lower",
            "|b64encode",
            "|urlencode",
            "|tojson",
            "|title",
        ] {
            let leaked = env
                .render_str(
                    &format!("{{{{ s {f} }}}}"),
                    minijinja::context! { s => "Hunter2 pass/word" },
                )
                .unwrap();
            let text = format!("token={leaked}; done");
            let clean = m.scrub(&text);
            assert!(!clean.contains(leaked.trim_matches('"')), "{f}: {clean}");
            assert!(clean.contains(MASK), "{f}: {clean}");
        }
    }

    #[test]
    fn tainted_texts_are_masked_once_registered() {
        let m = masker("abcdefgh");
        assert_eq!(m.scrub("x cdef y"), "x cdef y");
        m.add("cdef");
        assert_eq!(m.scrub("x cdef y"), "x *** y");
        m.add("ab");
        assert_eq!(m.scrub("ab"), "ab", "too short to mask in free text");
    }

    #[test]
    fn pieces_of_a_secret_are_masked() {
        let m = masker("Pa55/word+with?odd&chars");
        assert_eq!(
            m.scrub("raw Pa55/word+with?odd\nsh: chars: not found"),
            "raw ***\nsh: chars: not found"
        );
        assert_eq!(m.scrub("slice 5/word+with? end"), "slice *** end");
        assert_eq!(m.scrub("short 5/wor stays"), "short 5/wor stays");
        assert_eq!(m.scrub("ünïcödé Pa55/wo ünï"), "ünïcödé *** ünï");
    }

    #[test]
    fn scrubs_keys_and_nested_values() {
        let m = masker("s3cr3t-value");
        let mut v =
            serde_json::json!({"a": ["s3cr3t-value!"], "s3cr3t-value": 1, "n": 5, "s3cr3t": 2});
        m.scrub_value(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": ["***!"], "***": 1, "n": 5, "s3cr3t": 2})
        );
    }
}
