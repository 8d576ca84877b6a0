//! Helpers shared by the fuzz targets in `fuzz_targets/`.
//!
//! Parsers that read from a socket see their input in arbitrary pieces, so
//! most targets feed the same bytes twice, whole and in pieces, and require
//! the same outcome: the first input byte chooses the piece size.

/// The first byte of `data` (0 when empty) and the rest.
pub fn take_byte(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) => (b, rest),
        None => (0, data),
    }
}

/// A piece size from 1 to 256.
pub fn piece_size(b: u8) -> usize {
    usize::from(b) + 1
}
