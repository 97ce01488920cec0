//! The loader on arbitrary bytes: read limits, YAML parsing, span map, schema, semantic checks,
//! diagnostics rendering and, when the input is a valid runbook, planning. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = lifeboat::runbook::load_str("fuzz.yaml", text);
    match &loaded.result {
        Err(diags) => {
            for d in diags {
                let _ = lifeboat::diagnostics::render(&loaded.source, d, false);
            }
        }
        Ok(rb) => {
            if let Ok(params) = lifeboat::runbook::params::resolve(rb, &[], true) {
                if let Ok(plan) = lifeboat::plan::build(rb, &params) {
                    let _ = lifeboat::plan::render_text(&plan);
                    let _ = lifeboat::plan::render_mermaid(&plan);
                }
            }
        }
    }
});
