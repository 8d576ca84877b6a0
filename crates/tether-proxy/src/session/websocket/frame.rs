//! RFC 6455 framing, by hand: small, allocation-free on the hot path, and
//! with no per-connection buffers beyond what bytes are in flight (an idle
//! WebSocket session must cost almost nothing, DESIGN "Idle means small").
//!
//! Only what a server needs: decode masked client frames, encode unmasked
//! server frames. No extensions are negotiated, so RSV bits must be 0.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Close codes (RFC 6455 §7.4.1 and SPEC 3).
pub(crate) const CLOSE_NORMAL: u16 = 1000;
pub(crate) const CLOSE_PROTOCOL: u16 = 1002;
pub(crate) const CLOSE_INVALID_DATA: u16 = 1007;
pub(crate) const CLOSE_TOO_BIG: u16 = 1009;

/// One decoded frame, payload unmasked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) payload: Bytes,
}

/// A frame that breaks the protocol, with the close code it earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
}

const fn err(code: u16, reason: &'static str) -> FrameError {
    FrameError { code, reason }
}

/// Decodes the next client frame from `buf`, if whole. Payloads longer
/// than `max_payload` are refused with 1009 before they are buffered.
pub(crate) fn decode(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let b0 = buf[0];
    let b1 = buf[1];
    if b0 & 0x70 != 0 {
        return Err(err(CLOSE_PROTOCOL, "reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let control = opcode & 0x8 != 0;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        _ => return Err(err(CLOSE_PROTOCOL, "unknown opcode")),
    }
    if b1 & 0x80 == 0 {
        return Err(err(CLOSE_PROTOCOL, "client frames must be masked"));
    }
    let (len, header) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            let n = u64::from_be_bytes(n);
            if n >> 63 != 0 {
                return Err(err(CLOSE_PROTOCOL, "bad length"));
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    if control && (!fin || len > 125) {
        return Err(err(CLOSE_PROTOCOL, "bad control frame"));
    }
    if len > max_payload as u64 {
        return Err(err(CLOSE_TOO_BIG, "line_too_long"));
    }
    let len = len as usize;
    let total = header + 4 + len;
    if buf.len() < total {
        if buf.capacity() < total {
            buf.reserve(total - buf.len());
        }
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&buf[header..header + 4]);
    buf.advance(header + 4);
    let mut payload = buf.split_to(len);
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload: payload.freeze(),
    }))
}

/// Appends an unmasked server frame.
pub(crate) fn encode(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    out.put_u8(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= 0xFFFF => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(payload);
}

/// Appends a close frame with `code` and a short reason.
pub(crate) fn encode_close(out: &mut BytesMut, code: u16, reason: &str) {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = [0u8; 125];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + reason.len()].copy_from_slice(reason);
    encode(out, OP_CLOSE, &payload[..2 + reason.len()]);
}

/// The code of a close frame's payload (1005, "no status", when empty).
pub(crate) fn close_code(payload: &[u8]) -> u16 {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    }
}

/// Whether `code` may travel in a close frame (RFC 6455 §7.4): 1005, 1006
/// and 1015 stand for conditions and must never be sent, 1004 and the
/// rest of 1000-2999 are reserved, below 1000 nothing is defined.
fn close_code_on_wire(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The code that answers a client's close frame: its own code, as RFC 6455
/// §5.5.1 asks, when that code may be sent; 1000 for a close without a
/// code; 1002 (protocol error) for a code no endpoint may send, or a
/// payload of one byte, so that a forbidden code is never echoed.
pub(crate) fn close_answer(payload: &[u8]) -> u16 {
    match payload.len() {
        0 => CLOSE_NORMAL,
        1 => CLOSE_PROTOCOL,
        _ => match close_code(payload) {
            code if close_code_on_wire(code) => code,
            _ => CLOSE_PROTOCOL,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> BytesMut {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = BytesMut::new();
        out.put_u8(if fin { 0x80 } else { 0 } | opcode);
        match payload.len() {
            n if n < 126 => out.put_u8(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.put_u8(0x80 | 126);
                out.put_u16(n as u16);
            }
            n => {
                out.put_u8(0x80 | 127);
                out.put_u64(n as u64);
            }
        }
        out.put_slice(&mask);
        for (i, b) in payload.iter().enumerate() {
            out.put_u8(b ^ mask[i & 3]);
        }
        out
    }

    #[test]
    fn decodes_all_length_forms_in_any_chunking() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let wire = masked(OP_TEXT, true, &payload);
            for step in [1usize, 3, 64, wire.len()] {
                let mut buf = BytesMut::new();
                let mut got = None;
                for piece in wire.chunks(step) {
                    buf.extend_from_slice(piece);
                    if let Some(f) = decode(&mut buf, 100_000).unwrap() {
                        got = Some(f);
                    }
                }
                let f = got.expect("frame");
                assert_eq!(f.payload, payload, "len {len} step {step}");
                assert!(f.fin);
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn refusals() {
        let mut unmasked = BytesMut::from(&[0x81u8, 0x01, b'a'][..]);
        assert_eq!(decode(&mut unmasked, 10).unwrap_err().code, CLOSE_PROTOCOL);
        let mut rsv = masked(OP_TEXT, true, b"a");
        rsv[0] |= 0x40;
        assert_eq!(decode(&mut rsv, 10).unwrap_err().code, CLOSE_PROTOCOL);
        let mut big = masked(OP_TEXT, true, &[b'a'; 20]);
        assert_eq!(decode(&mut big, 10).unwrap_err().code, CLOSE_TOO_BIG);
        let mut long_ping = masked(OP_PING, true, &[0; 126]);
        assert_eq!(
            decode(&mut long_ping, 1000).unwrap_err().code,
            CLOSE_PROTOCOL
        );
        let mut fragmented_ping = masked(OP_PING, false, b"x");
        assert_eq!(
            decode(&mut fragmented_ping, 1000).unwrap_err().code,
            CLOSE_PROTOCOL
        );
        let mut unknown = masked(0x3, true, b"x");
        assert_eq!(decode(&mut unknown, 1000).unwrap_err().code, CLOSE_PROTOCOL);
    }

    #[test]
    fn encodes_server_frames() {
        let mut out = BytesMut::new();
        encode(&mut out, OP_TEXT, b"hi");
        assert_eq!(&out[..], &[0x81, 2, b'h', b'i']);
        let mut out = BytesMut::new();
        encode(&mut out, OP_BINARY, &[7u8; 300]);
        assert_eq!(&out[..4], &[0x82, 126, 1, 44]);
        let mut out = BytesMut::new();
        encode_close(&mut out, 4409, "taken over");
        assert_eq!(&out[..4], &[0x88, 12, 0x11, 0x39]);
        assert_eq!(close_code(&out[2..]), 4409);
    }

    #[test]
    fn close_answers_never_carry_a_forbidden_code() {
        let with = |code: u16| code.to_be_bytes();
        for code in [1005, 1006, 1015, 0, 999, 1004, 1016, 2999, 5000, 65535] {
            assert_eq!(close_answer(&with(code)), CLOSE_PROTOCOL, "{code}");
        }
        for code in [1000, 1001, 1003, 1008, 1011, 3000, 4000, 4999] {
            assert_eq!(close_answer(&with(code)), code);
        }
        assert_eq!(close_answer(b""), CLOSE_NORMAL);
        assert_eq!(close_answer(&[3]), CLOSE_PROTOCOL);
    }
}
