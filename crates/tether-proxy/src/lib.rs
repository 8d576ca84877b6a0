//! tether's gateway library.
//!
//! # Layout
//!
//! Layered: each module uses only those below it (docs/architecture.md
//! draws the layers and says where to change what). Top down: `serve`
//! (with `upgrade`), `admin` and `peer_listener`; `listener`, `http1`,
//! `h2` (connections); `gateway` and `router` (the request path);
//! `session`; `cluster`; `forward`, `headers`, `tls`;
//! `exchange`, `body`, `conn_limits`, `client_addr`; `codec`, [`config`],
//! `pem`, `metrics`, [`descriptors`]. `fuzzing` (hidden) opens a few
//! parsers of `codec` and `session` to the fuzz targets in `fuzz/`.

mod admin;
mod body;
mod client_addr;
mod cluster;
mod codec;
pub mod config;
mod conn_limits;
pub mod descriptors;
mod exchange;
mod forward;
mod gateway;
mod h2;
mod headers;
mod http1;
mod listener;
mod metrics;
pub mod notify;
mod peer_listener;
mod pem;
mod router;
mod serve;
mod session;
mod tls;
mod upgrade;

pub use serve::{run, run_upgraded, Control, RunError};
pub use upgrade::{Relaunch, UPGRADE_ENV};

/// Entry points for the fuzz targets in `fuzz/` (a separate crate, so it
/// can only reach `pub` items). Not an API: thin wrappers that keep the
/// parsers themselves `pub(crate)`, answering in plain types so that the
/// targets can check invariants without knowing the internal ones.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::{Bytes, BytesMut};

    use crate::codec::{chunked, head};
    use crate::session::websocket::frame;

    /// How a parsed request head delimits its body.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Framing {
        None,
        Length(u64),
        Chunked,
    }

    /// What a fuzz target may check about a head that `parse` accepted.
    #[derive(Debug)]
    pub struct HeadFacts {
        pub framing: Framing,
        pub http10: bool,
        pub keep_alive: bool,
        pub upgrade: bool,
        pub expect_continue: bool,
        /// Header lines by name, as forwarded upstream.
        pub content_length: usize,
        pub transfer_encoding: usize,
        pub host: usize,
    }

    pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
        head::find_head_end(buf, from)
    }

    /// `Err` says why (the refusal's kind decides the status).
    pub fn parse_request_head(buf: &[u8]) -> Result<HeadFacts, String> {
        let h = head::parse(buf).map_err(|e| format!("{e:?}"))?;
        Ok(HeadFacts {
            framing: match h.framing {
                head::Framing::None => Framing::None,
                head::Framing::Length(n) => Framing::Length(n),
                head::Framing::Chunked => Framing::Chunked,
            },
            http10: h.version == http::Version::HTTP_10,
            keep_alive: h.keep_alive,
            upgrade: h.upgrade,
            expect_continue: h.expect_continue,
            content_length: h
                .headers
                .get_all(http::header::CONTENT_LENGTH)
                .iter()
                .count(),
            transfer_encoding: h
                .headers
                .get_all(http::header::TRANSFER_ENCODING)
                .iter()
                .count(),
            host: h.headers.get_all(http::header::HOST).iter().count(),
        })
    }

    /// One decoded piece of a chunked body.
    #[derive(Debug)]
    pub enum Piece {
        Data(Bytes),
        Trailers(usize),
        End,
    }

    #[derive(Debug)]
    pub struct ChunkedDecoder(chunked::ChunkedDecoder);

    impl ChunkedDecoder {
        #[allow(clippy::new_without_default)]
        pub fn new() -> Self {
            ChunkedDecoder(chunked::ChunkedDecoder::new())
        }

        pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Piece>, &'static str> {
            Ok(match self.0.decode(buf).map_err(|e| e.0)? {
                None => None,
                Some(chunked::Piece::Data(d)) => Some(Piece::Data(d)),
                Some(chunked::Piece::Trailers(t)) => Some(Piece::Trailers(t.len())),
                Some(chunked::Piece::End) => Some(Piece::End),
            })
        }
    }

    /// A client frame: `(fin, opcode, payload)`; `Err` is the close code.
    pub fn decode_ws_frame(
        buf: &mut BytesMut,
        max_payload: usize,
    ) -> Result<Option<(bool, u8, Bytes)>, u16> {
        Ok(frame::decode(buf, max_payload)
            .map_err(|e| e.code)?
            .map(|f| (f.fin, f.opcode, f.payload)))
    }

    /// An unmasked server frame.
    pub fn encode_ws_frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
        frame::encode(out, opcode, payload)
    }
}
