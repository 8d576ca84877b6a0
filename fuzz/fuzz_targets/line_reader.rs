//! The line reader (SPEC 2, "Lines"), fed whole and in pieces, read the way
//! the gateway does: take every whole line, then read more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_fuzz::{piece_size, take_byte};
use tether_wire::LineReader;

/// Lines taken, whether the limit stopped reading, and the partial line.
fn read(input: &[u8], piece: usize, max_line: usize) -> (Vec<Vec<u8>>, bool, usize) {
    let mut reader = LineReader::new(max_line);
    let mut lines = Vec::new();
    for p in input.chunks(piece) {
        reader.push(p);
        loop {
            match reader.next_line() {
                Ok(Some(line)) => lines.push(line.to_vec()),
                Ok(None) => break,
                Err(_) => return (lines, true, 0),
            }
        }
        reader.shrink();
    }
    assert_eq!(reader.pending_partial(), reader.buffered());
    (lines, false, reader.buffered())
}

fuzz_target!(|data: &[u8]| {
    let (b, data) = take_byte(data);
    let (m, data) = take_byte(data);
    let max_line = usize::from(m) + 1;
    let whole = read(data, data.len().max(1), max_line);
    assert_eq!(read(data, piece_size(b), max_line), whole);

    let (lines, _, partial) = &whole;
    let mut taken = 0;
    for line in lines {
        assert!(
            line.len() <= max_line && line.iter().position(|&c| c == b'\n') == Some(line.len() - 1)
        );
        assert_eq!(&data[taken..taken + line.len()], &line[..]);
        taken += line.len();
    }
    assert!(taken + partial <= data.len());
});
