//! Property tests of the codecs: line framing under any chunking (SPEC 2,
//! *Lines*), control record round trips (SPEC 3), SessionIDs and counts
//! (SPEC 2 step 3, SPEC 7), and the `Accept` capability check (SPEC 2 step 1)
//! against a model built from the generated header's structure.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use tether_wire::{
    accepts_persistent, complete_lines, encode_open, parse_session_received, ClientControl,
    GatewayOpen, LineReader, SessionId, MAX_COUNT,
};

/// Bytes with plenty of LFs and CRs, or long runs between LFs (which the
/// word-at-a-time LF search skips over).
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let short = vec(
        prop_oneof![3 => Just(b'a'), 2 => Just(b'\n'), 1 => Just(b'\r'), 1 => any::<u8>()],
        0..400,
    );
    let long = vec((vec(any::<u8>(), 0..60), any::<bool>()), 0..8).prop_map(|runs| {
        let mut out = Vec::new();
        for (run, lf) in runs {
            out.extend(run.into_iter().filter(|&b| b != b'\n'));
            if lf {
                out.push(b'\n');
            }
        }
        out
    });
    prop_oneof![short, long]
}

/// The stream cut at arbitrary points.
fn chunks(data: &[u8], mut cuts: Vec<usize>) -> Vec<&[u8]> {
    cuts.iter_mut().for_each(|c| *c %= data.len() + 1);
    cuts.push(0);
    cuts.push(data.len());
    cuts.sort_unstable();
    cuts.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

/// The lines of `data`: split after every LF; the tail without LF is left.
fn split_whole(data: &[u8]) -> Vec<&[u8]> {
    data[..complete_lines(data)]
        .split_inclusive(|&b| b == b'\n')
        .collect()
}

proptest! {
    /// (a) Any chunking of a stream yields exactly the lines of splitting the
    /// whole stream at LFs, and the same partial tail.
    #[test]
    fn chunking_yields_the_same_lines(
        data in stream(),
        cuts in vec(any::<usize>(), 0..30),
        shrink_between in any::<bool>(),
    ) {
        let mut reader = LineReader::new(usize::MAX);
        let mut got: Vec<Bytes> = Vec::new();
        for (i, chunk) in chunks(&data, cuts).into_iter().enumerate() {
            if i % 2 == 0 {
                reader.push(chunk);
            } else {
                reader.buffer_mut().extend_from_slice(chunk);
            }
            while let Some(line) = reader.next_line().unwrap() {
                got.push(line);
            }
            if shrink_between {
                reader.shrink();
            }
        }
        let want = split_whole(&data);
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            prop_assert_eq!(&g[..], *w);
        }
        prop_assert_eq!(reader.pending_partial(), data.len() - complete_lines(&data));
        reader.discard_partial();
        prop_assert!(reader.is_empty());
        prop_assert_eq!(reader.buffer_mut().capacity(), 0);
    }

    /// (a') With a small `max_line`, any chunking yields the lines before the
    /// first one that is too long, then `LineTooLong`; a trailing partial of
    /// `max_line` bytes or more is too long already.
    #[test]
    fn max_line_is_enforced_under_any_chunking(
        data in stream(),
        cuts in vec(any::<usize>(), 0..30),
        max_line in 1usize..12,
    ) {
        let want = split_whole(&data);
        let first_long = want.iter().position(|l| l.len() > max_line);
        let tail = data.len() - complete_lines(&data);
        let expect_err = first_long.is_some() || tail >= max_line;
        let good = first_long.unwrap_or(want.len());

        let mut reader = LineReader::new(max_line);
        let mut got: Vec<Bytes> = Vec::new();
        let mut failed = false;
        'outer: for chunk in chunks(&data, cuts) {
            reader.push(chunk);
            loop {
                match reader.next_line() {
                    Ok(Some(line)) => got.push(line),
                    Ok(None) => break,
                    Err(_) => {
                        failed = true;
                        break 'outer;
                    }
                }
            }
        }
        prop_assert_eq!(failed, expect_err);
        prop_assert_eq!(got.len(), good);
        for (g, w) in got.iter().zip(&want) {
            prop_assert_eq!(&g[..], *w);
        }
    }

    /// (d) Control records round-trip.
    #[test]
    fn control_records_round_trip(
        sid in "[A-Za-z0-9_-]{22,64}",
        received in 0..=MAX_COUNT,
        initial in 0..=MAX_COUNT,
        status in 100u16..=599,
        ack in 0..=MAX_COUNT,
    ) {
        let sid = SessionId::parse(sid.as_bytes()).unwrap();
        for record in [
            ClientControl::New,
            ClientControl::Ack(ack),
            ClientControl::Resume { sid: sid.clone(), received },
        ] {
            prop_assert_eq!(ClientControl::parse(&record.encode()), Ok(record));
        }
        let open = GatewayOpen { sid: sid.clone(), received, status, initial };
        let bytes = encode_open(&sid, received, status, initial);
        prop_assert_eq!(&bytes, &open.encode());
        prop_assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            format!("sid={sid}&received={received}&status={status}&initial={initial}")
        );
        prop_assert_eq!(GatewayOpen::parse(&bytes), Ok(open));
    }

    /// Parsing never panics on arbitrary control payloads, and what parses
    /// encodes back to an equivalent record.
    #[test]
    fn control_parse_total(payload in vec(any::<u8>(), 0..80), text in "[a-z=&0-9]{0,40}") {
        for p in [&payload[..], text.as_bytes()] {
            if let Ok(record) = ClientControl::parse(p) {
                prop_assert_eq!(ClientControl::parse(&record.encode()), Ok(record));
            }
            if let Ok(open) = GatewayOpen::parse(p) {
                prop_assert_eq!(GatewayOpen::parse(&open.encode()), Ok(open));
            }
        }
    }

    /// Minted SessionIDs are 32 characters, parse back, and compare equal
    /// exactly when their random bytes do, in `==` and `ct_eq` alike.
    #[test]
    fn session_ids_from_random(a in any::<[u8; 24]>(), b in any::<[u8; 24]>()) {
        let (x, y) = (SessionId::from_random(a), SessionId::from_random(b));
        prop_assert_eq!(x.len(), 32);
        prop_assert_eq!(SessionId::parse(x.as_bytes()), Ok(x.clone()));
        prop_assert_eq!(x == y, a == b);
        prop_assert_eq!(x.ct_eq(&y), a == b);
        prop_assert!(x.ct_eq(&x.clone()));
    }

    /// `ct_eq` agrees with `==` on parsed IDs of any lengths.
    #[test]
    fn ct_eq_agrees_with_eq(a in "[A-Za-z0-9_-]{22,64}", b in "[ab]{22,24}") {
        let (x, y) = (SessionId::parse(a.as_bytes()).unwrap(), SessionId::parse(b.as_bytes()).unwrap());
        prop_assert_eq!(x.ct_eq(&y), x == y);
        prop_assert_eq!(x == y, a == b);
    }

    /// SessionID parsing accepts exactly 22..=64 characters of the alphabet.
    #[test]
    fn session_id_parse_matches_model(s in vec(any::<u8>(), 0..70)) {
        let ok = (22..=64).contains(&s.len())
            && s.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        prop_assert_eq!(SessionId::parse(&s).is_ok(), ok);
    }

    /// `Session-Received` agrees with a reference parse of digit strings.
    #[test]
    fn session_received_matches_model(s in "[ \t]{0,2}[0-9+ -]{0,25}[ \t]{0,2}") {
        let t = s.trim_matches([' ', '\t']);
        let want = if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            t.trim_start_matches('0').parse::<u128>().map_or(Some(0), Some)
                .filter(|&n| n <= u128::from(MAX_COUNT))
                .map(|n| n as u64)
        } else {
            None
        };
        prop_assert_eq!(parse_session_received(s.as_bytes()).ok(), want);
    }

    /// The `Accept` check against a model of the generated header.
    #[test]
    fn accept_matches_model(headers in vec(vec(accept_entry(), 0..4), 1..4)) {
        let expected = headers.iter().flatten().any(|e| e.counts);
        let values: Vec<String> = headers
            .iter()
            .map(|h| h.iter().map(|e| e.text.as_str()).collect::<Vec<_>>().join(" , "))
            .collect();
        let values: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        prop_assert_eq!(
            accepts_persistent(&values, &["application/x-persistent".to_string()]),
            expected,
            "{:?}", headers
        );
    }

    /// The `Accept` check never panics on arbitrary bytes.
    #[test]
    fn accept_total(values in vec(vec(any::<u8>(), 0..60), 0..3)) {
        let values: Vec<&[u8]> = values.iter().map(|v| &v[..]).collect();
        let _ = accepts_persistent(&values, &["application/x-persistent".to_string()]);
    }
}

#[derive(Debug, Clone)]
struct AcceptEntry {
    text: String,
    counts: bool,
}

fn accept_entry() -> impl Strategy<Value = AcceptEntry> {
    let media = prop_oneof![
        Just(("application/x-persistent", true)),
        Just(("Application/X-PERSISTENT", true)),
        Just(("text/html", false)),
        Just(("*/*", false)),
        Just(("application/*", false)),
        Just(("application/x-persistent-2", false)),
    ];
    let param = prop_oneof![
        Just("charset=utf-8"),
        Just(r#"x="a,b;q=0""#),
        Just(r#"y="q=0, application/x-persistent""#),
        Just("level=1"),
    ];
    let q = prop_oneof![
        Just(None),
        Just(Some(("0", false))),
        Just(Some(("0.0", false))),
        Just(Some(("0.000", false))),
        Just(Some(("0.001", true))),
        Just(Some(("0.5", true))),
        Just(Some(("1", true))),
        Just(Some(("1.000", true))),
        Just(Some(("1.0001", false))),
        Just(Some(("0.1234", false))),
        Just(Some(("abc", false))),
        Just(Some(("", false))),
    ];
    (media, vec(param, 0..3), q, any::<bool>(), 0usize..3).prop_map(
        |((media, matches), params, q, upper_q, q_at)| {
            let mut parts: Vec<String> = params.iter().map(|p| p.to_string()).collect();
            let mut q_ok = true;
            if let Some((value, ok)) = q {
                let name = if upper_q { "Q" } else { "q" };
                parts.insert(q_at.min(parts.len()), format!("{name}={value}"));
                q_ok = ok;
            }
            let mut text = media.to_string();
            for p in parts {
                text.push_str(" ;");
                text.push_str(&p);
            }
            AcceptEntry {
                text,
                counts: matches && q_ok,
            }
        },
    )
}
