//! The chunked request-body decoder, fed whole and in pieces.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tether_fuzz::{piece_size, take_byte};
use tether_proxy::fuzzing::{ChunkedDecoder, Piece};

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Body, trailer fields, bytes left after the body (the next request).
    End(Vec<u8>, usize, Vec<u8>),
    Bad,
    NeedMore,
}

fn decode(input: &[u8], piece: usize) -> Outcome {
    let mut dec = ChunkedDecoder::new();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut trailers = 0;
    let mut pieces = input.chunks(piece);
    loop {
        match dec.decode(&mut buf) {
            Err(_) => return Outcome::Bad,
            Ok(Some(Piece::Data(d))) => {
                assert!(!d.is_empty(), "empty data piece");
                body.extend_from_slice(&d);
            }
            Ok(Some(Piece::Trailers(n))) => trailers = n,
            Ok(Some(Piece::End)) => {
                let mut rest = buf.to_vec();
                rest.extend(pieces.flatten());
                return Outcome::End(body, trailers, rest);
            }
            Ok(None) => match pieces.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return Outcome::NeedMore,
            },
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (b, data) = take_byte(data);
    let whole = decode(data, data.len().max(1));
    if let Outcome::End(body, _, rest) = &whole {
        assert!(body.len() + rest.len() <= data.len());
    }
    assert_eq!(decode(data, piece_size(b)), whole);
});
