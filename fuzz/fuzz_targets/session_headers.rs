//! The session header codecs: `SessionID`, `Session-Received` and the
//! `Accept` capability check (SPEC 2 and 7).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_wire::{
    accepts_persistent, parse_qvalue, parse_session_received, SessionId, MAX_COUNT,
    SESSION_ID_MAX_LEN, SESSION_ID_MIN_LEN,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(sid) = SessionId::parse(data) {
        assert_eq!(sid.as_bytes(), data);
        assert!((SESSION_ID_MIN_LEN..=SESSION_ID_MAX_LEN).contains(&sid.len()));
        assert!(sid.ct_eq(&sid.as_str().parse().unwrap()));
    }
    if let Ok(n) = parse_session_received(data) {
        assert!(n <= MAX_COUNT);
        assert_eq!(parse_session_received(n.to_string().as_bytes()), Ok(n));
    }
    if let Some(q) = parse_qvalue(data) {
        assert!(q <= 1000);
    }
    // Several Accept lines: split at NUL.
    let values: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let accepted = ["application/x-persistent".to_string()];
    let yes = accepts_persistent(&values, &accepted);
    // A media range alone never counts without the accepted type in it.
    if yes {
        let lower = data.to_ascii_lowercase();
        assert!(lower
            .windows(accepted[0].len())
            .any(|w| w == accepted[0].as_bytes()));
    }
});
