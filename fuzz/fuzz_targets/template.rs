//! Templates on arbitrary text; the body is `lifeboat::fuzzing::template`, compiled and run on
//! seeds by every build.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        lifeboat::fuzzing::template(text);
    }
});
