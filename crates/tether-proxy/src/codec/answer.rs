//! The framing of an upstream's answer, held to the same rules as a
//! client's request (SPEC 5 v1.2, "Answers are held to the same rules").
//!
//! An origin or worker that answers with two framings (Content-Length and
//! Transfer-Encoding), differing lengths, a coding other than `chunked`, or
//! a `101` nobody asked for could make the gateway relay bytes the origin
//! chose as a second response on the client's connection: response
//! splitting. Such an answer is never relayed (502) and its connection is
//! never reused.

use http::header::{self, HeaderMap};
use http::StatusCode;

use super::head::trim;

/// How an answer's body is delimited on the upstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AnswerFraming {
    /// No body (1xx, 204, 304, or an answer to HEAD).
    None,
    Length(u64),
    Chunked,
    /// Neither length nor chunked: the body ends when the connection does.
    UntilClose,
}

/// Checks the framing fields of an answer with `status` to a request that
/// did (`asked_upgrade`) or did not ask to switch protocols; `Err` says
/// why the answer must not be relayed.
pub(crate) fn framing(
    status: StatusCode,
    headers: &HeaderMap,
    to_head: bool,
    asked_upgrade: bool,
) -> Result<AnswerFraming, &'static str> {
    if status == StatusCode::SWITCHING_PROTOCOLS && !asked_upgrade {
        return Err("101 to a request that asked for no upgrade");
    }
    let length = content_length(headers)?;
    let mut codings = 0usize;
    let mut chunked_last = false;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        for coding in value.as_bytes().split(|&b| b == b',') {
            let coding = trim(coding);
            if coding.is_empty() {
                return Err("empty transfer coding");
            }
            codings += 1;
            chunked_last = coding.eq_ignore_ascii_case(b"chunked");
        }
    }
    if codings > 0 {
        if length.is_some() {
            return Err("Content-Length with Transfer-Encoding");
        }
        // Only `chunked` alone is relayed: the gateway decodes it and
        // would pass any other coding on unlabelled.
        if codings != 1 || !chunked_last {
            return Err("Transfer-Encoding other than chunked");
        }
    }
    if to_head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(AnswerFraming::None);
    }
    Ok(match (codings, length) {
        (0, Some(n)) => AnswerFraming::Length(n),
        (0, None) => AnswerFraming::UntilClose,
        _ => AnswerFraming::Chunked,
    })
}

/// The one length of all `Content-Length` fields (identical duplicates and
/// lists count as one), `Err` for a bad or differing value.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut found: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = trim(part);
            if part.is_empty() || part.len() > 18 || !part.iter().all(u8::is_ascii_digit) {
                return Err("bad Content-Length");
            }
            let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if found.is_some_and(|f| f != n) {
                return Err("differing Content-Length values");
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Makes the fields of a relayed answer agree with its framing: one
/// `Content-Length`, and none on a 1xx or 204 (SPEC 5).
pub(crate) fn normalize(status: StatusCode, headers: &mut HeaderMap, framing: AnswerFraming) {
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        headers.remove(header::CONTENT_LENGTH);
    } else if let AnswerFraming::Length(n) = framing {
        if headers.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
            headers.insert(header::CONTENT_LENGTH, n.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn check(status: u16, pairs: &[(&str, &str)]) -> Result<AnswerFraming, &'static str> {
        framing(
            StatusCode::from_u16(status).unwrap(),
            &fields(pairs),
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
            assert!(check(200, pairs).is_err(), "relayed: {pairs:?}");
        }
        assert!(check(101, &[]).is_err());
        assert!(framing(
            StatusCode::SWITCHING_PROTOCOLS,
            &HeaderMap::new(),
            false,
            true
        )
        .is_ok());
    }

    #[test]
    fn sound_answers_pass() {
        assert_eq!(
            check(200, &[("content-length", "5")]),
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

    #[test]
    fn no_content_loses_its_length() {
        let mut h = fields(&[("content-length", "7")]);
        normalize(StatusCode::NO_CONTENT, &mut h, AnswerFraming::None);
        assert!(h.get("content-length").is_none());
        let mut h = fields(&[("content-length", "7")]);
        normalize(StatusCode::NOT_MODIFIED, &mut h, AnswerFraming::None);
        assert_eq!(h["content-length"], "7");
        let mut h = fields(&[("content-length", "7"), ("content-length", "7")]);
        normalize(StatusCode::OK, &mut h, AnswerFraming::Length(7));
        assert_eq!(h.get_all("content-length").iter().count(), 1);
    }
}
