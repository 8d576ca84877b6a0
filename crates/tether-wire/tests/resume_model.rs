//! Property tests of the resume guarantees of SPEC 4, on a model built from
//! the wire pieces the gateway and client libraries use.
//!
//! A lossy pipe carries bytes between a sender and a receiver. A random
//! schedule sends lines, delivers some in-flight bytes, acks, and drops the
//! connection; a drop loses everything in flight, including a partly
//! delivered line, which the receiver discards (SPEC 2: bytes after the last
//! LF at a drop are not a line). After each drop the receiver's count goes to
//! the sender, which either replays what follows it from its window or
//! refuses (`410` / 4410). The properties:
//!
//! - the receiver gets exactly lines `1..=N`, in order, each once; or the
//!   resume is refused, and what it got until then is exactly `1..=c`;
//! - a refusal only happens when the lines in flight did not fit in the
//!   window (SPEC 4: "as long as ... the lines in flight fit in
//!   `replay_window`", no loss).
//!
//! (b) is gateway → client with the gateway's [`ReplayWindow`] and WebSocket
//! acks; (c) is client → gateway with the client library's resend buffer and
//! the gateway's delivered count (`Session-Received`).

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use tether_wire::{LineReader, ReplayWindow};

#[derive(Debug, Clone)]
enum Op {
    /// The sending side takes its next line and writes it.
    Send,
    /// Up to this many in-flight bytes arrive.
    Deliver(usize),
    /// The receiver acks its count minus this much (acks may be stale).
    Ack(u64),
    /// The connection drops; the receiver resumes at once.
    Drop,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Send),
        4 => (1usize..40).prop_map(Op::Deliver),
        1 => (0u64..3).prop_map(Op::Ack),
        1 => Just(Op::Drop),
    ]
}

/// Line `i` (1-based): unique, `extra` filler bytes, LF-terminated; some end
/// in CRLF, which is just a byte before the LF.
fn make_lines(extras: &[usize]) -> Vec<Bytes> {
    extras
        .iter()
        .enumerate()
        .map(|(i, &extra)| {
            let fill = if extra % 3 == 0 { "\r" } else { "x" };
            Bytes::from(format!("{}:{}\n", i + 1, fill.repeat(extra)))
        })
        .collect()
}

/// Bytes of lines `c + 1 ..= s` (1-based counts).
fn bytes_between(lines: &[Bytes], c: u64, s: u64) -> usize {
    lines[c as usize..s as usize].iter().map(Bytes::len).sum()
}

/// What a model run ended with.
struct Outcome {
    /// Lines the receiver took, in order.
    received: Vec<Bytes>,
    /// Whether a resume was refused.
    refused: bool,
}

/// One direction of a session: `sender` holds the window, the receiver
/// frames with a `LineReader` and counts whole lines. `acks` enables
/// WebSocket-style acks (gateway → client only); `ack_on_resume` lets the
/// sender drop what the receiver's resume count confirms (the client
/// library's resend buffer, learning `Session-Received`).
fn run(
    lines: &[Bytes],
    cap: usize,
    ops: &[Op],
    acks: bool,
    ack_on_resume: bool,
) -> Result<Outcome, TestCaseError> {
    let n = lines.len() as u64;
    let mut window = ReplayWindow::new(cap);
    let mut pipe: Vec<u8> = Vec::new();
    let mut reader = LineReader::new(usize::MAX);
    let mut received: Vec<Bytes> = Vec::new();

    let take_lines = |reader: &mut LineReader, received: &mut Vec<Bytes>| {
        while let Some(line) = reader.next_line().expect("no limit") {
            received.push(line);
        }
    };

    let finish = |received: Vec<Bytes>, refused| Ok(Outcome { received, refused });

    for op in ops {
        match op {
            Op::Send => {
                if window.sent() < n {
                    let line = lines[window.sent() as usize].clone();
                    pipe.extend_from_slice(&line);
                    window.push(line);
                }
            }
            Op::Deliver(k) => {
                let k = (*k).min(pipe.len());
                reader.push(&pipe[..k]);
                pipe.drain(..k);
                take_lines(&mut reader, &mut received);
            }
            Op::Ack(age) => {
                if acks {
                    window.ack((received.len() as u64).saturating_sub(*age));
                }
            }
            Op::Drop => {
                pipe.clear();
                reader.discard_partial();
                prop_assert!(reader.is_empty());
                let c = received.len() as u64;
                // The receiver never claims more than was sent.
                prop_assert!(c <= window.sent());
                let in_flight = bytes_between(lines, c, window.sent());
                let replay: Option<Vec<Bytes>> = window
                    .try_replay_after(c)
                    .map(|r| r.map(|l| Bytes::copy_from_slice(&l)).collect());
                match replay {
                    Some(replay) => {
                        prop_assert_eq!(replay.len() as u64, window.sent() - c);
                        for line in &replay {
                            pipe.extend_from_slice(line);
                        }
                        if ack_on_resume {
                            window.ack(c);
                        }
                    }
                    None => {
                        prop_assert!(
                            in_flight > cap,
                            "refused with {} bytes in flight, window {}",
                            in_flight,
                            cap
                        );
                        return finish(received, true);
                    }
                }
            }
        }
        prop_assert!(window.held_bytes() <= cap || window.len() == 1);
    }

    // No more drops: everything is sent and arrives.
    while window.sent() < n {
        let line = lines[window.sent() as usize].clone();
        pipe.extend_from_slice(&line);
        window.push(line);
    }
    reader.push(&pipe);
    take_lines(&mut reader, &mut received);
    prop_assert_eq!(reader.pending_partial(), 0);
    finish(received, false)
}

fn check(lines: &[Bytes], outcome: &Outcome) -> Result<(), TestCaseError> {
    let got = &outcome.received;
    if outcome.refused {
        // Refused: explicit, and no gap or duplicate before it.
        prop_assert!(got.len() <= lines.len());
        prop_assert_eq!(&got[..], &lines[..got.len()]);
    } else {
        // Exactly 1..=N, in order, each once.
        prop_assert_eq!(got.len(), lines.len());
        prop_assert_eq!(&got[..], lines);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// (b) Gateway → client: the gateway's replay window and the client's
    /// received count, with advisory acks.
    #[test]
    fn gateway_to_client_resume(
        extras in vec(0usize..12, 0..60),
        cap in 0usize..80,
        ops in vec(op(), 0..250),
    ) {
        let lines = make_lines(&extras);
        let outcome = run(&lines, cap, &ops, true, false)?;
        check(&lines, &outcome)?;
    }

    /// (c) Client → gateway: the client's resend buffer and the gateway's
    /// delivered count, which the client learns on each resume.
    #[test]
    fn client_to_gateway_resume(
        extras in vec(0usize..12, 0..60),
        cap in 0usize..80,
        ops in vec(op(), 0..250),
    ) {
        let lines = make_lines(&extras);
        let outcome = run(&lines, cap, &ops, false, true)?;
        check(&lines, &outcome)?;
    }

    /// With a window at least as large as everything ever sent, no resume is
    /// ever refused: no loss, no duplicates, order kept, across any drops.
    #[test]
    fn large_window_never_refuses(
        extras in vec(0usize..12, 0..60),
        ops in vec(op(), 0..250),
        acks in any::<bool>(),
    ) {
        let lines = make_lines(&extras);
        let total: usize = lines.iter().map(Bytes::len).sum();
        let outcome = run(&lines, total, &ops, acks, !acks)?;
        prop_assert!(!outcome.refused);
        check(&lines, &outcome)?;
    }
}

/// A drop that catches more in flight than the window holds is refused, not
/// a silent gap.
#[test]
fn overflowing_drop_is_refused() {
    let lines = make_lines(&[5, 5, 5, 5]);
    let ops = [Op::Send, Op::Send, Op::Send, Op::Send, Op::Drop];
    let outcome = run(&lines, 10, &ops, true, false).unwrap();
    assert!(outcome.refused);
    assert!(outcome.received.is_empty());
}
