//! A session as it moves to a new process on upgrade (SPEC 10): plain
//! data, one struct per part, each part owned by the module that keeps
//! it at run time. A field added to a session is added here, once.
//!
//! The encoding is postcard, preceded by [`VERSION`]: a process reads
//! only the version it writes, and anything it cannot read (another
//! version, a truncated or corrupted record) is an error, never a panic;
//! the old process then keeps the session.
//!
//! Sockets do not travel in the record: they go beside it as file
//! descriptors (`SCM_RIGHTS`), in the order the record names them.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::end::EndReason;

/// The handover format this build writes and reads (2: the cluster's peer
/// listener is handed over too).
pub(crate) const VERSION: u32 = 2;

/// One session, with everything but its sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SessionState {
    pub(crate) id: String,
    pub(crate) vhost: String,
    pub(crate) hosts: Vec<String>,
    pub(crate) settings: Settings,
    pub(crate) peer: SocketAddr,
    /// How long the session has been open (its age in the end log line).
    pub(crate) age: Duration,
    /// Client lines delivered to the worker (`Session-Received`).
    pub(crate) delivered: u64,
    /// The newest resume's generation.
    pub(crate) gen: u64,
    /// Worker lines not yet sent toward the client, back to back.
    pub(crate) backlog: Vec<u8>,
    pub(crate) replay: ReplayState,
    pub(crate) client: ClientState,
    pub(crate) worker: WorkerState,
    /// Message mode: where the session's requests go, its close event
    /// included; `None` once that event is on its way from the old process.
    pub(crate) message: Option<MessageTarget>,
    pub(crate) stats: StatsState,
}

/// The vhost settings the session opened with (SPEC 8: a reload does not
/// change an open session; neither does an upgrade).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) resume_grace: Duration,
    pub(crate) unused_grace: Duration,
    pub(crate) replay_window: usize,
    pub(crate) detached_backlog: usize,
    pub(crate) max_line: usize,
    pub(crate) max_lines_per_second: u32,
    pub(crate) worker_retry: Duration,
    /// The worker it is pinned to, as written in the configuration.
    pub(crate) worker: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReplayState {
    /// `S`: lines sent toward the client.
    pub(crate) sent: u64,
    /// The lines held, oldest first, back to back.
    pub(crate) held: Vec<u8>,
    /// A replay under way to the attached client: lines it has before the
    /// next one replayed.
    pub(crate) replaying_from: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ClientState {
    /// Waiting for the link of a resume (or the opening) that has
    /// received `from` lines.
    Awaiting {
        from: u64,
        grace_left: Duration,
    },
    Detached {
        grace_left: Duration,
    },
    /// Attached on a plain TCP connection, which travels as a descriptor.
    Attached(LinkState),
}

/// A client connection's bytes in both directions, exactly: what was read
/// and not yet taken, and what was queued and not yet written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum LinkState {
    Native {
        input: Vec<u8>,
        out: Vec<u8>,
    },
    WebSocket {
        input: Vec<u8>,
        /// A fragmented message being put together: opcode and bytes.
        message: Option<(u8, Vec<u8>)>,
        out: Vec<u8>,
        /// Control frame bytes queued and not yet out (pongs, a close
        /// answer), and where in `out` the newest of them ends.
        control_unsent: usize,
        control_end: usize,
        close_sent: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum WorkerState {
    /// Stream mode: the worker connection travels as a descriptor.
    Stream {
        input: Vec<u8>,
        out: Vec<u8>,
        eof: bool,
    },
    /// Message mode, between requests.
    Message {
        /// Client lines for the next request.
        queued: Vec<u8>,
        /// Answer bytes read and not yet taken as lines.
        input: Vec<u8>,
        winding_down: bool,
    },
    /// The worker side is gone; lines are still owed to the client.
    Finishing(EndReason),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MessageTarget {
    /// Path and query of the opening request.
    pub(crate) target: String,
    /// `message_format = "form"`.
    pub(crate) form: bool,
    /// The fields every request carries, in order (names lower-case).
    pub(crate) headers: Vec<(String, Vec<u8>)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct StatsState {
    pub(crate) lines_to_worker: u64,
    pub(crate) bytes_to_worker: u64,
    pub(crate) lines_to_client: u64,
    pub(crate) bytes_to_client: u64,
    pub(crate) resumes: u64,
    pub(crate) takeovers: u64,
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadRecord {
    #[error("handover record of version {0}, this build reads version {VERSION}")]
    Version(u32),
    #[error("truncated handover record")]
    Truncated,
    #[error("malformed handover record: {0}")]
    Malformed(String),
}

impl SessionState {
    /// How many descriptors travel beside the record: the client
    /// connection when attached, the worker connection in stream mode.
    pub(crate) fn descriptors(&self) -> usize {
        usize::from(matches!(self.client, ClientState::Attached(_)))
            + usize::from(matches!(self.worker, WorkerState::Stream { .. }))
    }
}

/// `value` with the version in front.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = VERSION.to_be_bytes().to_vec();
    // Serializing plain owned data into a Vec cannot fail.
    out.extend(postcard::to_allocvec(value).expect("plain data serializes"));
    out
}

/// The value `encode` wrote, refusing another version, trailing bytes,
/// a truncated record and anything malformed.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, BadRecord> {
    let (version, rest) = bytes.split_first_chunk::<4>().ok_or(BadRecord::Truncated)?;
    let version = u32::from_be_bytes(*version);
    if version != VERSION {
        return Err(BadRecord::Version(version));
    }
    match postcard::take_from_bytes::<T>(rest) {
        Ok((value, [])) => Ok(value),
        Ok((_, extra)) => Err(BadRecord::Malformed(format!(
            "{} bytes after the record",
            extra.len()
        ))),
        Err(postcard::Error::DeserializeUnexpectedEnd) => Err(BadRecord::Truncated),
        Err(e) => Err(BadRecord::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..64)
    }

    fn duration() -> impl Strategy<Value = Duration> {
        (0u64..1_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n))
    }

    fn end_reason() -> impl Strategy<Value = EndReason> {
        prop_oneof![
            Just(EndReason::WorkerEnd),
            Just(EndReason::ClientEnd),
            Just(EndReason::Admin),
            Just(EndReason::WorkerUnreachable),
            any::<u16>().prop_map(EndReason::WorkerStatus),
        ]
    }

    fn client() -> impl Strategy<Value = ClientState> {
        prop_oneof![
            (any::<u64>(), duration())
                .prop_map(|(from, grace_left)| ClientState::Awaiting { from, grace_left }),
            duration().prop_map(|grace_left| ClientState::Detached { grace_left }),
            (bytes(), bytes())
                .prop_map(|(input, out)| ClientState::Attached(LinkState::Native { input, out })),
            (
                bytes(),
                proptest::option::of((any::<u8>(), bytes())),
                bytes(),
                any::<usize>(),
                any::<bool>()
            )
                .prop_map(|(input, message, out, control_unsent, close_sent)| {
                    ClientState::Attached(LinkState::WebSocket {
                        input,
                        message,
                        control_end: out.len() / 2,
                        out,
                        control_unsent,
                        close_sent,
                    })
                }),
        ]
    }

    fn worker() -> impl Strategy<Value = WorkerState> {
        prop_oneof![
            (bytes(), bytes(), any::<bool>()).prop_map(|(input, out, eof)| WorkerState::Stream {
                input,
                out,
                eof
            }),
            (bytes(), bytes(), any::<bool>()).prop_map(|(queued, input, winding_down)| {
                WorkerState::Message {
                    queued,
                    input,
                    winding_down,
                }
            }),
            end_reason().prop_map(WorkerState::Finishing),
        ]
    }

    fn state() -> impl Strategy<Value = SessionState> {
        (
            (
                "[A-Za-z0-9_-]{22,64}",
                "[a-z.]{1,20}",
                any::<[u8; 4]>(),
                any::<u16>(),
            ),
            (duration(), any::<u64>(), any::<u64>(), bytes()),
            (any::<u64>(), bytes(), proptest::option::of(any::<u64>())),
            client(),
            worker(),
            (any::<u64>(), any::<usize>(), any::<u32>()),
            proptest::option::of((
                "[ -~]{0,20}",
                proptest::collection::vec(("[a-z-]{1,10}", bytes()), 0..4),
            )),
        )
            .prop_map(
                |(
                    (id, vhost, ip, port),
                    (age, delivered, gen, backlog),
                    replay,
                    client,
                    worker,
                    n,
                    message,
                )| {
                    SessionState {
                        hosts: vec![vhost.clone()],
                        id,
                        vhost,
                        settings: Settings {
                            resume_grace: age,
                            unused_grace: age / 2,
                            replay_window: n.1,
                            detached_backlog: n.1 / 2,
                            max_line: n.1 / 3,
                            max_lines_per_second: n.2,
                            worker_retry: age / 3,
                            worker: "http://127.0.0.1:8081".into(),
                        },
                        peer: SocketAddr::from((ip, port)),
                        age,
                        delivered,
                        gen,
                        backlog,
                        replay: ReplayState {
                            sent: replay.0,
                            held: replay.1,
                            replaying_from: replay.2,
                        },
                        client,
                        worker,
                        message: message.map(|(target, headers)| MessageTarget {
                            form: headers.len() % 2 == 0,
                            target,
                            headers,
                        }),
                        stats: StatsState {
                            lines_to_worker: n.0,
                            resumes: n.0 / 2,
                            ..StatsState::default()
                        },
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn a_session_reads_back_as_it_was_written(s in state()) {
            let decoded: SessionState = decode(&encode(&s)).unwrap();
            prop_assert_eq!(decoded, s);
        }

        #[test]
        fn a_truncated_record_is_an_error(s in state(), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&s);
            let cut = cut.index(bytes.len());
            prop_assert!(decode::<SessionState>(&bytes[..cut]).is_err());
        }

        #[test]
        fn a_corrupted_record_is_an_error_or_another_session(
            s in state(),
            at in any::<prop::sample::Index>(),
            with in any::<u8>(),
        ) {
            let mut bytes = encode(&s);
            let at = at.index(bytes.len());
            bytes[at] = with;
            // Never a panic; a flip inside a byte string reads as other
            // bytes, which only the fields' own checks can catch.
            let _ = decode::<SessionState>(&bytes);
        }

        #[test]
        fn garbage_is_an_error_never_a_panic(garbage in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<SessionState>(&garbage);
        }
    }

    #[test]
    fn another_version_is_refused() {
        let s = SessionState {
            id: "a".repeat(32),
            vhost: "v".into(),
            hosts: vec!["v".into()],
            settings: Settings {
                resume_grace: Duration::from_secs(120),
                unused_grace: Duration::from_secs(30),
                replay_window: 1,
                detached_backlog: 1,
                max_line: 1,
                max_lines_per_second: 0,
                worker_retry: Duration::ZERO,
                worker: "http://w".into(),
            },
            peer: "127.0.0.1:1".parse().unwrap(),
            age: Duration::ZERO,
            delivered: 0,
            gen: 0,
            backlog: Vec::new(),
            replay: ReplayState {
                sent: 0,
                held: Vec::new(),
                replaying_from: None,
            },
            client: ClientState::Detached {
                grace_left: Duration::ZERO,
            },
            worker: WorkerState::Finishing(EndReason::WorkerEnd),
            message: None,
            stats: StatsState::default(),
        };
        let mut bytes = encode(&s);
        let other = VERSION + 1;
        bytes[..4].copy_from_slice(&other.to_be_bytes());
        assert!(matches!(
            decode::<SessionState>(&bytes),
            Err(BadRecord::Version(v)) if v == other
        ));
        assert!(matches!(
            decode::<SessionState>(&[0, 0]),
            Err(BadRecord::Truncated)
        ));
    }
}
