//! The framing of an answer, held to the same rules as a request
//! (SPEC 5 v1.2, "Answers are held to the same rules").
//!
//! An origin or worker that answers with two framings (Content-Length and
//! Transfer-Encoding), differing lengths, a coding other than `chunked`, or
//! a `101` nobody asked for could make a reader relay bytes the origin
//! chose as a second response: response splitting. Such an answer is never
//! used.

use super::trim;

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFraming {
    /// No body (1xx, 204, 304, or an answer to HEAD).
    None,
    Length(u64),
    Chunked,
    /// Neither length nor chunked: the body ends when the connection does.
    UntilClose,
}

/// Checks the framing fields of an answer with `status` to a request that
/// did (`asked_upgrade`) or did not ask to switch protocols; `fields` are
/// its header fields as (name, value). `Err` says why the answer must not
/// be used.
pub fn answer_framing<'a>(
    status: u16,
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    to_head: bool,
    asked_upgrade: bool,
) -> Result<AnswerFraming, &'static str> {
    if status == 101 && !asked_upgrade {
        return Err("101 to a request that asked for no upgrade");
    }
    let mut length: Option<u64> = None;
    let mut codings = 0usize;
    let mut chunked_last = false;
    for (name, value) in fields {
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in value.split(|&b| b == b',') {
                let n = parse_length(trim(part))?;
                if length.is_some_and(|l| l != n) {
                    return Err("differing Content-Length values");
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in value.split(|&b| b == b',') {
                let coding = trim(coding);
                if coding.is_empty() {
                    return Err("empty transfer coding");
                }
                codings += 1;
                chunked_last = coding.eq_ignore_ascii_case(b"chunked");
            }
        }
    }
    if codings > 0 {
        if length.is_some() {
            return Err("Content-Length with Transfer-Encoding");
        }
        // Only `chunked` alone is usable: a reader decodes it and would
        // pass any other coding on unlabelled.
        if codings != 1 || !chunked_last {
            return Err("Transfer-Encoding other than chunked");
        }
    }
    if to_head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(AnswerFraming::None);
    }
    Ok(match (codings, length) {
        (0, Some(n)) => AnswerFraming::Length(n),
        (0, None) => AnswerFraming::UntilClose,
        _ => AnswerFraming::Chunked,
    })
}

fn parse_length(part: &[u8]) -> Result<u64, &'static str> {
    if part.is_empty() || part.len() > 18 || !part.iter().all(u8::is_ascii_digit) {
        return Err("bad Content-Length");
    }
    Ok(part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: u16, pairs: &[(&str, &str)]) -> Result<AnswerFraming, &'static str> {
        answer_framing(
            status,
            pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
            false,
            false,
        )
    }

    #[test]
    fn splitting_vectors_are_refused() {
        for pairs in [
            &[("content-length", "0"), ("transfer-encoding", "chunked")][..],
            &[("transfer-encoding", "chunked"), ("content-length", "5")],
            &[("transfer-encoding", "identity"), ("content-length", "5")],
            &[("transfer-encoding", "identity")],
            &[("transfer-encoding", "gzip, chunked")],
            &[("transfer-encoding", "chunked, gzip")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "chunked,")],
            &[("content-length", "5"), ("content-length", "6")],
            &[("content-length", "5, 6")],
            &[("content-length", "+5")],
            &[("content-length", "0x5")],
            &[("content-length", "")],
        ] {
            assert!(check(200, pairs).is_err(), "accepted: {pairs:?}");
        }
        assert!(check(101, &[]).is_err());
        assert!(answer_framing(101, [], false, true).is_ok());
    }

    #[test]
    fn sound_answers_pass() {
        assert_eq!(
            check(200, &[("Content-Length", "5")]),
            Ok(AnswerFraming::Length(5))
        );
        assert_eq!(
            check(200, &[("content-length", "5"), ("content-length", "5")]),
            Ok(AnswerFraming::Length(5))
        );
        assert_eq!(
            check(200, &[("transfer-encoding", "Chunked")]),
            Ok(AnswerFraming::Chunked)
        );
        assert_eq!(check(200, &[]), Ok(AnswerFraming::UntilClose));
        assert_eq!(
            check(204, &[("content-length", "7")]),
            Ok(AnswerFraming::None)
        );
        assert_eq!(
            check(304, &[("content-length", "7")]),
            Ok(AnswerFraming::None)
        );
    }
}
