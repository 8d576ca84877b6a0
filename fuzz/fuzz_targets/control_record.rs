//! WebSocket control records (SPEC 3): what parses re-encodes to a record
//! that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_wire::{encode_open, ClientControl, GatewayOpen, MAX_COUNT};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = ClientControl::parse(data) {
        if let ClientControl::Resume { received: n, .. } | ClientControl::Ack(n) = c {
            assert!(n <= MAX_COUNT);
        }
        assert_eq!(ClientControl::parse(&c.encode()), Ok(c));
    }
    if let Ok(o) = GatewayOpen::parse(data) {
        assert!((100..=599).contains(&o.status));
        let encoded = o.encode();
        assert_eq!(
            encoded,
            encode_open(&o.sid, o.received, o.status, o.initial)
        );
        assert_eq!(GatewayOpen::parse(&encoded), Ok(o));
    }
});
