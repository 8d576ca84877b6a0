//! The one strict HTTP/1 codec (no I/O): request heads, the framing of
//! upstream answers, chunked bodies and the answers the gateway writes. The client
//! connection loop, the pooled upstream client and the worker client all
//! use it, so one set of rules decides where a message
//! ends (SPEC 5).

pub(crate) mod answer;
pub(crate) mod chunked;
pub(crate) mod encode;
pub(crate) mod head;
pub(crate) mod upstream;

pub(crate) use head::trim;
