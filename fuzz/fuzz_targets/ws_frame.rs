//! WebSocket client frames (RFC 6455), fed whole and in pieces; every
//! accepted frame must survive the encoder's length forms.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tether_fuzz::{piece_size, take_byte};
use tether_proxy::fuzzing::{decode_ws_frame, encode_ws_frame};

/// The gateway's smallest limit (control frames and `max_line` below it).
const MAX_PAYLOAD: usize = 1024;

type Frames = (Vec<(bool, u8, Bytes)>, Option<u16>, usize);

/// Frames, then the close code that stopped decoding, and bytes left over.
fn decode(input: &[u8], piece: usize) -> Frames {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut pieces = input.chunks(piece);
    loop {
        match decode_ws_frame(&mut buf, MAX_PAYLOAD) {
            Err(code) => return (frames, Some(code), 0),
            Ok(Some(f)) => frames.push(f),
            Ok(None) => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return (frames, None, buf.len()),
            },
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (b, data) = take_byte(data);
    let whole = decode(data, data.len().max(1));
    assert_eq!(decode(data, piece_size(b)), whole);

    for (fin, opcode, payload) in &whole.0 {
        assert!(payload.len() <= MAX_PAYLOAD);
        if opcode & 0x8 != 0 {
            assert!(*fin && payload.len() <= 125);
        }
        // Re-encoded (as a client would: masked, here with a zero mask).
        let mut out = BytesMut::new();
        encode_ws_frame(&mut out, *opcode, payload);
        let header = out.len() - payload.len();
        let mut masked = BytesMut::from(&out[..header]);
        masked[1] |= 0x80;
        masked.extend_from_slice(&[0; 4]);
        masked.extend_from_slice(payload);
        let again = decode_ws_frame(&mut masked, MAX_PAYLOAD);
        assert_eq!(again, Ok(Some((true, *opcode, payload.clone()))));
        assert!(masked.is_empty());
    }
});
