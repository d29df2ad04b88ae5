//! Reference parsing never panics, and what it accepts prints back to something it accepts
//! the same way.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(reference) = wasm_oci_fetcher::parse_reference(text) {
        let whole = reference.whole();
        let again = wasm_oci_fetcher::parse_reference(&whole).expect("a printed reference parses");
        assert_eq!(again.whole(), whole);
    }
});
