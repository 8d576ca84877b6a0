//! The strict HTTP/1 pieces that need no `http` types, shared by the
//! gateway (client requests, upstream answers) and the native client
//! (answers): chunked bodies and the framing of an answer (SPEC 5).

pub mod chunked;
pub mod framing;

/// `v` without leading and trailing spaces and tabs (HTTP's OWS).
pub fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let Some(start) = start else { return &[] };
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(start);
    &v[start..=end]
}
