//! Chunked bodies through the one strict decoder of `tether-wire`, with
//! trailers as the gateway forwards them (a `HeaderMap`).

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use tether_wire::http1::chunked::{self as wire, trailer_fields};

pub(crate) use tether_wire::http1::chunked::BadChunk;

/// One decoded piece of the body.
#[derive(Debug)]
pub(crate) enum Piece {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
}

#[derive(Debug, Default)]
pub(crate) struct ChunkedDecoder(wire::ChunkedDecoder);

impl ChunkedDecoder {
    pub(crate) fn new() -> Self {
        ChunkedDecoder(wire::ChunkedDecoder::new())
    }

    /// Takes what it can from `buf`. `Ok(None)` means more bytes are needed.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Piece>, BadChunk> {
        Ok(match self.0.decode(buf)? {
            None => None,
            Some(wire::Piece::Data(d)) => Some(Piece::Data(d)),
            Some(wire::Piece::End) => Some(Piece::End),
            Some(wire::Piece::Trailers(block)) => Some(Piece::Trailers(header_map(&block)?)),
        })
    }
}

fn header_map(block: &[u8]) -> Result<HeaderMap, BadChunk> {
    let mut map = HeaderMap::new();
    for field in trailer_fields(block) {
        let (name, value) = field?;
        let name = HeaderName::from_bytes(name).map_err(|_| BadChunk("bad trailer"))?;
        let value = HeaderValue::from_bytes(value).map_err(|_| BadChunk("bad trailer"))?;
        map.append(name, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_become_fields() {
        let mut dec = ChunkedDecoder::new();
        let mut buf = BytesMut::from(&b"1\r\na\r\n0\r\nX-Sum: 1\r\nX-B:2\r\n\r\n"[..]);
        assert!(matches!(dec.decode(&mut buf), Ok(Some(Piece::Data(_)))));
        let Ok(Some(Piece::Trailers(t))) = dec.decode(&mut buf) else {
            panic!("no trailers");
        };
        assert_eq!(
            (&t["x-sum"], &t["x-b"]),
            (
                &"1".parse::<HeaderValue>().unwrap(),
                &"2".parse::<HeaderValue>().unwrap()
            )
        );
        let mut bad = BytesMut::from(&b"0\r\nX(A): 1\r\n\r\n"[..]);
        assert!(ChunkedDecoder::new().decode(&mut bad).is_err());
    }
}
