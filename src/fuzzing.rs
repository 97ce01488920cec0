//! The bodies of the fuzz targets (fuzz/), here so that every build compiles them and the unit
//! tests run them on seeds: a fuzz target that no longer builds would otherwise go unnoticed,
//! since CI cannot afford a sanitizer build. Not an API.

/// The loader on arbitrary text: read limits, YAML parsing, span map, schema, semantic checks,
/// diagnostics rendering and, when the input is a valid runbook, planning. Nothing may panic.
pub fn load(text: &str) {
    let loaded = crate::runbook::load_str("fuzz.yaml", text);
    match &loaded.result {
        Err(diags) => {
            for d in diags {
                let _ = crate::diagnostics::render(&loaded.source, d, false);
            }
        }
        Ok(rb) => {
            if let Ok(params) = crate::runbook::params::resolve(rb, &[], true)
                && let Ok(plan) = crate::plan::build(rb, &params)
            {
                let _ = crate::plan::render_text(&plan);
                let _ = crate::plan::render_mermaid(&plan);
            }
        }
    }
}

/// A template on arbitrary text: as a step's argument, a `when` and an `assert`, through the
/// checks validation makes (names, what can never render), the dry render `plan` makes (with
/// the memory budget), and the plan's text; then what came out through the secrets masker and
/// its decoders, and the Markdown escaping of reports. Nothing may panic, hang or grow without
/// bound.
pub fn template(template: &str) {
    let t = serde_json::to_string(template).expect("a string serializes");
    let text = format!(
        r#"apiVersion: lifeboat/v1
kind: Runbook
metadata: {{name: fuzz, version: 1.0.0}}
params:
  x: {{type: string, default: "a b"}}
  n: {{type: integer, default: 3}}
secrets:
  token: {{env: LIFEBOAT_FUZZ_TOKEN}}
steps:
  - {{id: first, action: shell, with: {{argv: [echo, {t}]}}, assert: {t}}}
  - {{id: second, action: shell, needs: [first], when: {t}, with: {{script: {t}}}}}
"#
    );
    let loaded = crate::runbook::load_str("fuzz.yaml", &text);
    let mut shown = String::new();
    let mut render = |d: &crate::diagnostics::Diagnostic| {
        shown.push_str(&crate::diagnostics::render(&loaded.source, d, false));
    };
    match &loaded.result {
        Err(diags) => diags.iter().for_each(&mut render),
        Ok(rb) => {
            if let Ok(params) = crate::runbook::params::resolve(rb, &[], true) {
                match crate::plan::build(rb, &params) {
                    Ok(plan) => shown.push_str(&crate::plan::render_text(&plan)),
                    Err(diags) => diags.iter().for_each(&mut render),
                }
            }
        }
    }
    let mut secrets = crate::engine::secrets::Secrets::default();
    secrets
        .values
        .insert("token".into(), "Pa55/word+with?odd&chars".into());
    let masker = crate::engine::Masker::new(&secrets);
    let _ = masker.scrub(&shown);
    let _ = masker.scrub(template);
    let _ = crate::text::printable(&shown, true);
    let _ = crate::drill::markdown::text(template);
}

#[cfg(test)]
mod tests {
    /// The targets on a few seeds of each kind, as the fuzzer starts from.
    #[test]
    fn the_fuzz_targets_run_on_their_seeds() {
        for seed in [
            "",
            "{{ params.x | shell_quote }}",
            "{% for i in range(params.n) %}{{ i }}{% endfor %}",
            "{{ secrets.token | b64encode }}",
            "{{ env['LIFEBOAT' ~ '_FUZZ_TOKEN'][1:5] }}",
            "params.n > 2 and params.x is string",
            "{{ 1 / 0 }}",
            "{% include 'x' %}",
            "{{ (params.x * 100000)[::3] }}",
            "{{",
        ] {
            super::template(seed);
            super::load(seed);
        }
        super::load(include_str!("../runbooks/postgres-restore.yaml"));
    }
}
