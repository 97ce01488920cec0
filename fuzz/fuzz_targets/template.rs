//! Templates on arbitrary text: as a step's argument, a `when` and an `assert`, through the
//! checks validation makes (names, what can never render), the dry render `plan` makes (with
//! the memory budget), and the plan's text; then what came out through the secrets masker and
//! its decoders. Nothing may panic, hang or grow without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(template) = std::str::from_utf8(data) else {
        return;
    };
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
    let loaded = lifeboat::runbook::load_str("fuzz.yaml", &text);
    let mut shown = String::new();
    match &loaded.result {
        Err(diags) => {
            for d in diags {
                shown.push_str(&lifeboat::diagnostics::render(&loaded.source, d, false));
            }
        }
        Ok(rb) => {
            if let Ok(params) = lifeboat::runbook::params::resolve(rb, &[], true) {
                match lifeboat::plan::build(rb, &params) {
                    Ok(plan) => shown.push_str(&lifeboat::plan::render_text(&plan)),
                    Err(diags) => {
                        for d in diags {
                            shown.push_str(&lifeboat::diagnostics::render(
                                &loaded.source,
                                d,
                                false,
                            ));
                        }
                    }
                }
            }
        }
    }
    let mut secrets = lifeboat::engine::secrets::Secrets::default();
    secrets
        .values
        .insert("token".into(), "Pa55/word+with?odd&chars".into());
    let masker = lifeboat::engine::Masker::new(&secrets);
    let _ = masker.scrub(&shown);
    let _ = masker.scrub(template);
    let _ = lifeboat::text::printable(&shown, true);
});
