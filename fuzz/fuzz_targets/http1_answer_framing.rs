//! The framing rules of an upstream answer (tether-wire `http1::framing`,
//! used by the gateway and tether-client): `name: value` lines after a
//! status byte. Checked: no panic, and what is accepted is never ambiguous.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_fuzz::take_byte;
use tether_wire::http1::framing::{answer_framing, AnswerFraming};
use tether_wire::http1::trim;

fn is(name: &[u8], want: &str) -> bool {
    name.eq_ignore_ascii_case(want.as_bytes())
}

fuzz_target!(|data: &[u8]| {
    let (first, rest) = take_byte(data);
    let status = [101u16, 200, 204, 304, 100, 404][usize::from(first % 6)];
    let to_head = first & 0x40 != 0;
    let asked_upgrade = first & 0x80 != 0;
    let fields: Vec<(&[u8], &[u8])> = rest
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some((trim(&line[..colon]), &line[colon + 1..]))
        })
        .collect();
    let framing = answer_framing(status, fields.iter().copied(), to_head, asked_upgrade);
    let lengths = fields.iter().filter(|(n, _)| is(n, "content-length")).count();
    let codings = fields
        .iter()
        .filter(|(n, _)| is(n, "transfer-encoding"))
        .count();
    match framing {
        Err(_) => {}
        Ok(f) => {
            assert!(lengths == 0 || codings == 0, "both framings accepted");
            assert!(codings <= 1, "several Transfer-Encoding fields accepted");
            assert!(status != 101 || asked_upgrade, "unsolicited 101 accepted");
            match f {
                AnswerFraming::Length(_) => assert!(lengths > 0),
                AnswerFraming::Chunked => assert_eq!(codings, 1),
                AnswerFraming::UntilClose => assert_eq!(lengths + codings, 0),
                AnswerFraming::None => {}
            }
        }
    }
});
