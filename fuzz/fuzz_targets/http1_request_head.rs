//! The HTTP/1 request head: finding its end while bytes arrive, then the
//! strict parse (SPEC 5, "Ambiguous framing").
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_fuzz::take_byte;
use tether_proxy::fuzzing::{find_head_end, parse_request_head, Framing};

fuzz_target!(|data: &[u8]| {
    let (b, data) = take_byte(data);
    let whole = find_head_end(data, 0);
    if let Some(end) = whole {
        assert!(end <= data.len() && data[..end].ends_with(b"\n"));
    }
    // The connection resumes its scan where the last read ended.
    let cut = usize::from(b) * data.len() / 255;
    if find_head_end(&data[..cut], 0).is_none() {
        assert_eq!(find_head_end(data, cut), whole, "resumed at {cut}");
    }

    let Some(end) = whole else { return };
    let Ok(head) = parse_request_head(&data[..end]) else {
        return;
    };
    // What goes upstream must frame the body exactly as tether reads it.
    match head.framing {
        Framing::None => assert!(head.content_length == 0 && head.transfer_encoding == 0),
        Framing::Length(_) => assert!(head.content_length == 1 && head.transfer_encoding == 0),
        Framing::Chunked => {
            assert!(head.content_length == 0 && head.transfer_encoding > 0 && !head.http10)
        }
    }
    assert!(head.host <= 1 && (head.http10 || head.host == 1));
    assert!(!(head.expect_continue && head.http10));
});
