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
    /// The environment variables `env:` secrets were read from: reading one is reading the
    /// secret, and no child process gets one unless its step asks.
    pub env_vars: Vec<String>,
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
    Ok(Secrets {
        values,
        env_vars: env_vars(rb),
    })
}

fn env_vars(rb: &ValidRunbook) -> Vec<String> {
    rb.secrets
        .values()
        .filter_map(|s| match s {
            SecretSource::Env(var) => Some(var.clone()),
            SecretSource::File(_) => None,
        })
        .collect()
}

/// The secrets this process can read, without the others: enough to mask what it writes when
/// it needs no secret itself (`approve`).
pub fn resolve_available(rb: &ValidRunbook) -> Secrets {
    let values = rb
        .secrets
        .iter()
        .filter_map(|(name, source)| Some((name.clone(), read(name, source).ok()?)))
        .collect();
    Secrets {
        values,
        env_vars: env_vars(rb),
    }
}

/// Whether a value holds a secret's text anywhere in it.
pub fn holds_secret(v: &Value, secrets: &[String]) -> bool {
    match v {
        Value::String(s) => secrets.iter().any(|x| s.contains(x.as_str())),
        Value::Number(n) => {
            let n = n.to_string();
            secrets.iter().any(|x| n.contains(x.as_str()))
        }
        Value::Array(items) => items.iter().any(|i| holds_secret(i, secrets)),
        Value::Object(m) => m.iter().any(|(k, i)| {
            secrets.iter().any(|x| k.contains(x.as_str())) || holds_secret(i, secrets)
        }),
        Value::Bool(_) | Value::Null => false,
    }
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

/// Parts of a secret that every secret of its kind has, so they say nothing of it: age's identity
/// prefix. A piece of one of them is not masked on its own (every "secret" in every message would
/// be `***` whenever an age key is loaded); the whole secret still is.
const PUBLIC_MARKERS: &[&str] = &["AGE-SECRET-KEY-1"];

/// The text with each public marker (in any case) cut out, so that no piece to be masked is
/// taken from it.
fn without_public_markers(text: &str) -> String {
    let mut out = text.to_string();
    for m in PUBLIC_MARKERS {
        let lower = out.to_ascii_lowercase();
        let needle = m.to_ascii_lowercase();
        let mut cut = String::with_capacity(out.len());
        let mut last = 0;
        for (i, _) in lower.match_indices(&needle) {
            cut.push_str(&out[last..i]);
            cut.push('\0');
            last = i + needle.len();
        }
        cut.push_str(&out[last..]);
        out = cut;
    }
    out
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
    /// The secrets' values and the variables `env:` secrets were read from: kept out of child
    /// processes' environments ([`kept_from_children`]).
    values: Vec<String>,
    env_vars: Vec<String>,
    /// FRAGMENT-byte windows of the secrets themselves, looked for in decoded tokens; secrets
    /// shorter than a FRAGMENT are looked for whole.
    raw_grams: std::collections::HashSet<Vec<u8>>,
    short: Vec<Vec<u8>>,
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

/// The environment variables a child process must not inherit: those the live runs' `env:`
/// secrets were read from, and any other holding a secret's value. A step gives its command a
/// secret only by asking for it in its own `env:`.
pub fn kept_from_children() -> Vec<String> {
    let mut live = LIVE.lock().expect("maskers lock");
    live.retain(|m| m.strong_count() > 0);
    let maskers: Vec<_> = live.iter().filter_map(std::sync::Weak::upgrade).collect();
    drop(live);
    let mut vars: Vec<String> = maskers.iter().flat_map(|m| m.env_vars.clone()).collect();
    for (name, value) in std::env::vars_os() {
        let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
            continue;
        };
        if maskers
            .iter()
            .any(|m| m.values.iter().any(|s| value.contains(s.as_str())))
        {
            vars.push(name.to_string());
        }
    }
    vars
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
            .map(|s| without_public_markers(s))
            .flat_map(|s| {
                s.into_bytes()
                    .windows(FRAGMENT)
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect();
        let raw_grams = secrets
            .values
            .values()
            .map(|s| without_public_markers(s))
            .flat_map(|s| {
                s.into_bytes()
                    .windows(FRAGMENT)
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect();
        let short = secrets
            .values
            .values()
            .filter(|s| s.len() < FRAGMENT)
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let m = Masker {
            patterns: RwLock::default(),
            sources: sources.clone(),
            values: secrets.values.values().cloned().collect(),
            env_vars: secrets.env_vars.clone(),
            raw_grams,
            short,
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
        let out = self.scrub_fragments(&out).unwrap_or(out);
        self.scrub_encoded(&out).unwrap_or(out)
    }

    /// Masks whole tokens that decode to text holding a secret, or a FRAGMENT-long piece of one:
    /// base64 and base64url at any of the four alignments (a secret inside a larger encoded
    /// text, an HTTP Basic credential), hex at either nibble, and percent-encoding. These are the
    /// forms a child process or a server produces with no template involved. `None` when there
    /// is nothing to mask.
    fn scrub_encoded(&self, text: &str) -> Option<String> {
        if self.raw_grams.is_empty() && self.short.is_empty() {
            return None;
        }
        let mut out = String::new();
        let mut copied = 0;
        for (start, token) in encoded_tokens(text) {
            if decodings(token).any(|bytes| self.holds_piece(&bytes)) {
                out.push_str(&text[copied..start]);
                out.push_str(MASK);
                copied = start + token.len();
            }
        }
        if copied == 0 {
            return None;
        }
        out.push_str(&text[copied..]);
        Some(out)
    }

    fn holds_piece(&self, bytes: &[u8]) -> bool {
        bytes.windows(FRAGMENT).any(|w| self.raw_grams.contains(w))
            || self
                .short
                .iter()
                .any(|s| bytes.windows(s.len()).any(|w| w == s.as_slice()))
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

/// Tokens that may be an encoding: maximal runs of characters of base64, base64url, hex or
/// percent-encoding, long enough to hold the shortest secret, with their byte offsets.
fn encoded_tokens(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let is_part =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_' | b'%');
    let bytes = text.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < bytes.len() {
            if !is_part(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && is_part(bytes[i]) {
                i += 1;
            }
            // The shortest secret (MIN_SECRET_LEN bytes) is 6 characters of unpadded base64.
            if i - start >= 6 {
                return Some((start, &text[start..i]));
            }
        }
        None
    })
}

/// What a token may decode to: each way of reading it that parses.
fn decodings(token: &str) -> impl Iterator<Item = Vec<u8>> + '_ {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let lenient = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let engines = [
        GeneralPurpose::new(&base64::alphabet::STANDARD, lenient),
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, lenient),
    ];
    let unpadded = token.trim_end_matches('=');
    // A secret inside a larger text starts at any byte: its encoding at any of four offsets.
    let b64 = (0..4).flat_map(move |skip| {
        let part = unpadded.get(skip..).unwrap_or("");
        // A last group of 2 or 3 characters holds bytes; one of 1 cannot.
        let whole = if part.len() % 4 == 1 {
            &part[..part.len() - 1]
        } else {
            part
        };
        engines
            .clone()
            .into_iter()
            .filter_map(move |e| e.decode(whole).ok())
    });
    let hex = (0..2).filter_map(move |skip| {
        let digits = token.get(skip..)?;
        let digits = &digits[..digits.len() / 2 * 2];
        (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok())
            .collect::<Option<Vec<u8>>>()
    });
    let percent = token
        .contains('%')
        .then(|| percent_decode(token))
        .into_iter();
    b64.chain(hex).chain(percent)
}

/// `%41%42` → `AB`; anything that is not an escape stays as it is.
fn percent_decode(token: &str) -> Vec<u8> {
    let b = token.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    out
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

    /// Encodings made with no template (by a child process, a server): each at every
    /// alignment a surrounding text can give it, in both alphabets, in both cases.
    #[test]
    fn encodings_made_outside_templates_are_masked() {
        use base64::Engine;
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        for secret in [
            "Pa55/word+with?odd&chars",
            "s3cr",
            "tok\u{e9}n-\u{1F511}-42",
        ] {
            let m = masker(secret);
            let mut forms: Vec<(String, String)> = Vec::new();
            for prefix in ["", "a", "ab", "abc", "user:", "{\"password\":\""] {
                for suffix in ["", "x", "\"}", "\n"] {
                    let plain = format!("{prefix}{secret}{suffix}");
                    for (name, e) in [
                        ("base64", &STANDARD),
                        ("base64 no pad", &STANDARD_NO_PAD),
                        ("base64url", &URL_SAFE),
                        ("base64url no pad", &URL_SAFE_NO_PAD),
                    ] {
                        forms.push((format!("{name} of {plain:?}"), e.encode(&plain)));
                    }
                    let hex: String = plain.bytes().map(|b| format!("{b:02x}")).collect();
                    forms.push((format!("hex of {plain:?}"), hex.clone()));
                    forms.push((format!("HEX of {plain:?}"), hex.to_uppercase()));
                    let pct: String = plain.bytes().map(|b| format!("%{b:02X}")).collect();
                    forms.push((format!("percent of {plain:?}"), pct));
                }
            }
            let basic = STANDARD.encode(format!("ops:{secret}"));
            forms.push(("HTTP Basic".into(), format!("Authorization: Basic {basic}")));
            for (what, form) in forms {
                let line = format!("before {form} after");
                let out = m.scrub(&line);
                assert!(
                    out.contains("***"),
                    "{what} of {secret:?} not masked: {out}"
                );
                assert!(!out.contains(&form), "{what} of {secret:?} left in: {out}");
                assert!(
                    out.starts_with("before ") && out.ends_with(" after"),
                    "{out}"
                );
            }
        }
    }

    #[test]
    fn encoded_text_without_a_secret_is_left_alone() {
        use base64::Engine;
        let m = masker("Pa55/word+with?odd&chars");
        for text in [
            base64::engine::general_purpose::STANDARD
                .encode("an ordinary sentence, nothing secret"),
            "0123456789abcdef0123456789abcdef".to_string(),
            "https://example.com/a%20b?c=d%2Fe".to_string(),
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_string(),
        ] {
            assert_eq!(m.scrub(&text), text);
        }
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
    fn an_age_identity_masks_itself_not_every_word_of_its_prefix() {
        let id = "AGE-SECRET-KEY-1QQPZRY9X8GF2TVDW0S3JN54KHCE6MUA7LQPZRY9X8GF2TVDW0S3JN54KHCE6";
        let m = masker(id);
        let msg = "User \"viewer\" cannot list resource \"secrets\"";
        assert_eq!(m.scrub(msg), msg);
        assert_eq!(m.scrub(&format!("key: {id}")), "key: ***");
        // A piece of its own part is still a piece of a secret.
        assert_eq!(m.scrub("…9X8GF2TVDW0S3J…"), "…***…");
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
