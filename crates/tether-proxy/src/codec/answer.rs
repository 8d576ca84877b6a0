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

use tether_wire::http1::framing::answer_framing;

pub(crate) use tether_wire::http1::framing::AnswerFraming;

/// Checks the framing fields of an answer with `status` to a request that
/// did (`asked_upgrade`) or did not ask to switch protocols; `Err` says
/// why the answer must not be relayed.
pub(crate) fn framing(
    status: StatusCode,
    headers: &HeaderMap,
    to_head: bool,
    asked_upgrade: bool,
) -> Result<AnswerFraming, &'static str> {
    let framing_fields = [header::CONTENT_LENGTH, header::TRANSFER_ENCODING];
    let fields = framing_fields.iter().flat_map(|name| {
        headers
            .get_all(name)
            .iter()
            .map(move |v| (name.as_str().as_bytes(), v.as_bytes()))
    });
    answer_framing(status.as_u16(), fields, to_head, asked_upgrade)
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
    fn checks_the_framing_fields_of_a_header_map() {
        assert!(check(
            200,
            &[("content-length", "0"), ("transfer-encoding", "chunked")]
        )
        .is_err());
        assert_eq!(
            check(200, &[("content-length", "5")]),
            Ok(AnswerFraming::Length(5))
        );
        assert_eq!(
            check(204, &[("content-length", "7")]),
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
