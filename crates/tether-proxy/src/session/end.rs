//! Why a session ends, and why the session task closes a client link. The
//! task only says why; each transport decides how that is said on its
//! wire (the WebSocket close codes of SPEC 3 and 6 are in
//! `websocket::link`; a native link just closes).

use crate::metrics::EndKind;

/// Why a session ended (the metric label of SPEC 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum EndReason {
    ClientEnd,
    WorkerEnd,
    GraceExpired,
    ResumeGone,
    LineTooLong,
    ProtocolError,
    Admin,
    /// Message mode: a non-2xx answer.
    WorkerStatus(u16),
    /// Message mode: the worker could not be reached.
    WorkerUnreachable,
    Shutdown,
}

impl EndReason {
    /// The `reason` label that counts it.
    pub(crate) fn metric_kind(self) -> EndKind {
        match self {
            EndReason::ClientEnd => EndKind::ClientEnd,
            EndReason::WorkerEnd => EndKind::WorkerEnd,
            EndReason::GraceExpired => EndKind::GraceExpired,
            EndReason::ResumeGone => EndKind::ResumeGone,
            EndReason::LineTooLong => EndKind::LineTooLong,
            EndReason::ProtocolError => EndKind::ProtocolError,
            EndReason::Admin => EndKind::Admin,
            EndReason::WorkerStatus(_) => EndKind::WorkerStatus,
            EndReason::WorkerUnreachable => EndKind::WorkerUnreachable,
            EndReason::Shutdown => EndKind::Shutdown,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EndReason::ClientEnd => "client_end",
            EndReason::WorkerEnd => "worker_end",
            EndReason::GraceExpired => "grace_expired",
            EndReason::ResumeGone => "resume_gone",
            EndReason::LineTooLong => "line_too_long",
            EndReason::ProtocolError => "protocol_error",
            EndReason::Admin => "admin",
            EndReason::WorkerStatus(_) => "worker_status",
            EndReason::WorkerUnreachable => "worker_unreachable",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// Why the session task closes a client link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// The session ended.
    Ended(EndReason),
    /// A newer connection resumed the session (SPEC 4 "Takeover").
    TakenOver,
}
