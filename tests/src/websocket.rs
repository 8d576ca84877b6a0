//! A WebSocket client written by hand over [`RawConn`] (RFC 6455): the
//! opening handshake, masked client frames, unmasked server frames.

use std::io;
use std::net::SocketAddr;

use crate::payload::base64;
use crate::raw_http::{request_bytes, RawConn, Response};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// One frame as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl WsFrame {
    /// Close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OP_CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// Reason of a close frame (the bytes after the code), lossily decoded.
    pub fn close_reason(&self) -> String {
        if self.opcode != OP_CLOSE || self.payload.len() < 2 {
            return String::new();
        }
        String::from_utf8_lossy(&self.payload[2..]).into_owned()
    }
}

/// A client WebSocket connection after a successful `101`.
pub struct WsClient {
    conn: RawConn,
    mask_state: u32,
}

/// `Sec-WebSocket-Accept` for `key`.
pub fn accept_for(key: &str) -> String {
    let digest = sha1_smol::Sha1::from(format!("{key}{GUID}"))
        .digest()
        .bytes();
    base64(&digest)
}

impl WsClient {
    /// Sends the opening handshake for `path` with `Host: host` plus
    /// `extra` headers. `Ok` on a `101` whose `Sec-WebSocket-Accept` is
    /// right; `Err(response)` otherwise.
    pub fn connect(
        addr: SocketAddr,
        host: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Result<(WsClient, Response), Box<Response>> {
        let mut conn = RawConn::connect(addr);
        let key = base64(&crate::payload::pattern(u64::from(addr.port()), 16));
        let mut headers = vec![
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key.as_str()),
            ("Sec-WebSocket-Version", "13"),
        ];
        headers.extend_from_slice(extra);
        conn.send(&request_bytes("GET", path, host, &headers, b""));
        let resp = conn.read_head().expect("read handshake response");
        if resp.status != 101 {
            let mut resp = resp;
            let mut body = Vec::new();
            if let Ok(f) = conn.read_body_into(&resp, "GET", &mut |b| body.extend_from_slice(b)) {
                resp.framing = f;
            }
            resp.body = body;
            return Err(Box::new(resp));
        }
        assert_eq!(
            resp.header("sec-websocket-accept"),
            Some(accept_for(&key).as_str()),
            "wrong Sec-WebSocket-Accept in\n{}",
            resp.head_text()
        );
        Ok((
            WsClient {
                conn,
                mask_state: 0x1234_5678,
            },
            resp,
        ))
    }

    fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.mask_state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_state = x;
        x.to_be_bytes()
    }

    /// Sends one masked frame.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        out.push(if fin { 0x80 } else { 0 } | opcode);
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = self.next_mask();
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.conn.try_send(&out)
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, OP_TEXT, text.as_bytes())
            .expect("send text frame");
    }

    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.send_frame(true, OP_BINARY, bytes)
            .expect("send binary frame");
    }

    /// Reads one frame (server frames are unmasked; a masked one is
    /// unmasked anyway and reported as is).
    pub fn read_frame(&mut self) -> io::Result<WsFrame> {
        let h = self.conn.read_bytes(2)?;
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0F;
        let masked = h[1] & 0x80 != 0;
        let mut len = u64::from(h[1] & 0x7F);
        if len == 126 {
            let b = self.conn.read_bytes(2)?;
            len = u64::from(u16::from_be_bytes([b[0], b[1]]));
        } else if len == 127 {
            let b = self.conn.read_bytes(8)?;
            len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
        }
        let mask = if masked {
            Some(self.conn.read_bytes(4)?)
        } else {
            None
        };
        let mut payload = self.conn.read_bytes(len as usize)?;
        if let Some(m) = mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= m[i % 4];
            }
        }
        Ok(WsFrame {
            fin,
            opcode,
            payload,
        })
    }

    /// Reads the next data message (text or binary, reassembling
    /// continuation frames), answering pings on the way.
    pub fn read_message(&mut self) -> io::Result<WsFrame> {
        let mut msg: Option<WsFrame> = None;
        loop {
            let f = self.read_frame()?;
            match f.opcode {
                OP_PING => self.send_frame(true, OP_PONG, &f.payload)?,
                OP_PONG => {}
                OP_CLOSE => return Ok(f),
                OP_CONT => {
                    let m = msg.as_mut().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "continuation first")
                    })?;
                    m.payload.extend_from_slice(&f.payload);
                    if f.fin {
                        m.fin = true;
                        return Ok(msg.take().expect("message"));
                    }
                }
                _ => {
                    if f.fin {
                        return Ok(f);
                    }
                    msg = Some(f);
                }
            }
        }
    }

    /// Sends a close frame with `code` and reads frames until the peer's
    /// close frame; returns it.
    pub fn close(&mut self, code: u16) -> io::Result<WsFrame> {
        self.send_frame(true, OP_CLOSE, &code.to_be_bytes())?;
        loop {
            let f = self.read_frame()?;
            if f.opcode == OP_CLOSE {
                return Ok(f);
            }
        }
    }

    /// Sends a close frame with `code` and `reason`, without waiting.
    pub fn send_close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        self.send_frame(true, OP_CLOSE, &payload)
    }

    /// Drops the TCP connection abruptly (`SO_LINGER` 0, then close: the
    /// peer sees a reset), without a close frame.
    pub fn reset(self) {
        let sock = socket2::SockRef::from(self.conn.stream());
        let _ = sock.set_linger(Some(std::time::Duration::ZERO));
        drop(self);
    }

    pub fn conn(&mut self) -> &mut RawConn {
        &mut self.conn
    }
}
