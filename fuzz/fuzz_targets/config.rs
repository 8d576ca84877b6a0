//! The configuration loader (SPEC 1) on arbitrary text: every answer is a
//! config or a list of `FILE:LINE:COLUMN: sentence` errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `[vhost.tls]` opens the certificate and key files it names; keep the
    // fuzzer off the filesystem (keys can also be spelled with escapes).
    if text.contains("tls") || text.contains("\\u") || text.contains("\\U") {
        return;
    }
    if let Err(errors) = tether_proxy::config::parse("fuzz.toml", text) {
        assert!(!errors.is_empty());
        for e in &errors {
            assert!(e.line >= 1 && e.column >= 1 && !e.message.is_empty());
        }
    }
});
