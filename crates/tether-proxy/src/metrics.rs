//! The metric families of SPEC 9, typed, with their names in one place.
//!
//! Counters and gauges are plain atomics resolved once per vhost at config
//! load (`VhostMetrics` rides in the `Vhost`, sessions keep theirs), so the
//! data path never takes a lock or hashes a label. Families are kept by
//! vhost label across reloads, so counters never go back. No label ever
//! holds a SessionID, a client address or a raw path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of `tether_request_duration_seconds`, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub(crate) const UPSTREAM_KINDS: [&str; 4] = ["connect", "reset", "timeout", "protocol"];
pub(crate) const END_REASONS: [&str; 10] = [
    "client_end",
    "worker_end",
    "grace_expired",
    "resume_gone",
    "line_too_long",
    "worker_status",
    "worker_unreachable",
    "protocol_error",
    "admin",
    "shutdown",
];
pub(crate) const LIMIT_KINDS: [&str; 11] = [
    "connections",
    "connections_per_ip",
    "sessions",
    "sessions_per_ip",
    "header_bytes",
    "header_timeout",
    "idle_timeout",
    "line_rate",
    "upstream_connections",
    "worker_sessions",
    "body_timeout",
];

/// `tether_limits_hit_total{kind}`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    Connections = 0,
    ConnectionsPerIp,
    Sessions,
    SessionsPerIp,
    HeaderBytes,
    HeaderTimeout,
    IdleTimeout,
    LineRate,
    /// `max_upstream_connections` of one origin or worker (docs/security.md).
    UpstreamConnections,
    /// `max_sessions_per_worker` on every worker of a vhost.
    WorkerSessions,
    /// A request body that made no progress for `idle_timeout`.
    BodyTimeout,
}

/// `tether_upstream_errors_total{kind}`, in the order of [`UPSTREAM_KINDS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamKind {
    Connect = 0,
    Reset,
    Timeout,
    Protocol,
}

/// `tether_sessions_ended_total{reason}`, in the order of [`END_REASONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndKind {
    ClientEnd = 0,
    WorkerEnd,
    GraceExpired,
    ResumeGone,
    LineTooLong,
    WorkerStatus,
    WorkerUnreachable,
    ProtocolError,
    Admin,
    Shutdown,
}

/// `tether_resumes_total{result}`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ResumeResult {
    Ok = 0,
    Gone,
    BadRequest,
}

/// `direction` of lines and bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    ToWorker = 0,
    ToClient,
}

/// `tether_sessions{state}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SessionState {
    Attached = 0,
    Detached,
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Every per-vhost family, for one vhost label.
#[derive(Default)]
pub(crate) struct VhostMetrics {
    label: String,
    requests: [AtomicU64; 5],
    duration: Histogram,
    upstream_errors: [AtomicU64; 4],
    sessions: [AtomicI64; 2],
    opened_native: AtomicU64,
    opened_websocket: AtomicU64,
    ended: [AtomicU64; 10],
    resumes: [AtomicU64; 3],
    takeovers: AtomicU64,
    lines: [AtomicU64; 2],
    bytes: [AtomicU64; 2],
    replay_bytes: AtomicI64,
    backlog_bytes: AtomicI64,
}

impl std::fmt::Debug for VhostMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VhostMetrics({:?})", self.label)
    }
}

impl VhostMetrics {
    /// One HTTP response sent on a listener, and how long it took.
    pub(crate) fn response(&self, status: u16, took: Duration) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.requests[class].fetch_add(1, Ordering::Relaxed);
        self.duration.observe(took);
    }

    pub(crate) fn upstream_error(&self, kind: UpstreamKind) {
        self.upstream_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session_state(&self, state: SessionState, delta: i64) {
        self.sessions[state as usize].fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn session_opened(&self, websocket: bool) {
        let c = if websocket {
            &self.opened_websocket
        } else {
            &self.opened_native
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn session_ended(&self, reason: EndKind) {
        self.ended[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn resume(&self, result: ResumeResult) {
        self.resumes[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn takeover(&self) {
        self.takeovers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn line(&self, direction: Direction, bytes: usize) {
        self.lines[direction as usize].fetch_add(1, Ordering::Relaxed);
        self.bytes[direction as usize].fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn replay_bytes(&self, delta: i64) {
        self.replay_bytes.fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn backlog_bytes(&self, delta: i64) {
        self.backlog_bytes.fetch_add(delta, Ordering::Relaxed);
    }
}

/// A gauge of open client connections on one listener, decremented when
/// the guard drops.
pub(crate) struct ConnectionGauge(Arc<AtomicI64>);

impl ConnectionGauge {
    pub(crate) fn open(gauge: &Arc<AtomicI64>) -> ConnectionGauge {
        gauge.fetch_add(1, Ordering::Relaxed);
        ConnectionGauge(gauge.clone())
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker's gauges, read at scrape time.
pub(crate) struct WorkerSample {
    pub vhost: String,
    pub worker: String,
    pub sessions: usize,
    pub up: bool,
}

/// All metrics of the process; outlives config reloads.
#[derive(Default)]
pub(crate) struct Metrics {
    // Locked only when a vhost or listener family is first made (config
    // load) and at scrape time.
    vhosts: Mutex<BTreeMap<String, Arc<VhostMetrics>>>,
    listeners: Mutex<BTreeMap<String, Arc<AtomicI64>>>,
    limits: [AtomicU64; LIMIT_KINDS.len()],
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
    affinity_entries: AtomicI64,
    upgrades_ok: AtomicU64,
    upgrades_error: AtomicU64,
    handover_sessions: AtomicU64,
    /// Counter values of the processes before an upgrade, by series:
    /// added to this process's own so that counters never go back
    /// (SPEC 10, as Envoy's hot restart does).
    carried: Mutex<BTreeMap<String, f64>>,
}

impl Metrics {
    /// The families of a vhost label (`""` for answers before a vhost is
    /// known), made on first use.
    pub(crate) fn vhost(&self, label: &str) -> Arc<VhostMetrics> {
        let mut vhosts = self.vhosts.lock().unwrap_or_else(PoisonError::into_inner);
        vhosts
            .entry(label.to_owned())
            .or_insert_with(|| {
                Arc::new(VhostMetrics {
                    label: label.to_owned(),
                    ..VhostMetrics::default()
                })
            })
            .clone()
    }

    /// The connection gauge of a listener, labelled as configured.
    pub(crate) fn listener(&self, addr: &str) -> Arc<AtomicI64> {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(addr.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn limit_hit(&self, limit: Limit) {
        self.limits[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reload(&self, ok: bool) {
        let c = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_error
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn upgrade(&self, ok: bool) {
        let c = if ok {
            &self.upgrades_ok
        } else {
            &self.upgrades_error
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn handover_sessions(&self, n: u64) {
        self.handover_sessions.fetch_add(n, Ordering::Relaxed);
    }

    /// Every counter sample as rendered now (the old process's values
    /// included), for the process an upgrade hands over to.
    pub(crate) fn counter_samples(&self) -> Vec<(String, f64)> {
        let text = self.render(&[]);
        let mut counters = Vec::new();
        let mut family_is_counter = false;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family_is_counter = rest.ends_with(" counter");
                continue;
            }
            if line.starts_with('#') || !family_is_counter {
                continue;
            }
            if let Some((series, value)) = line.rsplit_once(' ') {
                if let Ok(v) = value.parse::<f64>() {
                    counters.push((series.to_owned(), v));
                }
            }
        }
        counters
    }

    /// Takes over the counter values of the process before an upgrade.
    pub(crate) fn carry(&self, samples: Vec<(String, f64)>) {
        let mut carried = self.carried.lock().unwrap_or_else(PoisonError::into_inner);
        for (series, value) in samples {
            *carried.entry(series).or_default() += value;
        }
    }

    /// `text` with the carried counter values added to its samples.
    fn with_carried(&self, text: String) -> String {
        let carried = self.carried.lock().unwrap_or_else(PoisonError::into_inner);
        if carried.is_empty() {
            return text;
        }
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            let added = (!line.starts_with('#'))
                .then(|| line.rsplit_once(' '))
                .flatten()
                .and_then(|(series, value)| {
                    let before = carried.get(series)?;
                    Some((series, value.parse::<f64>().ok()? + before))
                });
            match added {
                Some((series, value)) => {
                    let _ = writeln!(out, "{series} {value}");
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    pub(crate) fn affinity_entries(&self, delta: i64) {
        self.affinity_entries.fetch_add(delta, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything.
    pub(crate) fn render(&self, workers: &[WorkerSample]) -> String {
        self.with_carried(self.render_own(workers))
    }

    fn render_own(&self, workers: &[WorkerSample]) -> String {
        let vhosts: Vec<Arc<VhostMetrics>> = self
            .vhosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut out = String::with_capacity(8 * 1024);
        let v = &vhosts;

        family(
            &mut out,
            "tether_requests_total",
            "counter",
            "HTTP responses sent on the listeners, by status class.",
        );
        for m in v {
            for (i, n) in m.requests.iter().enumerate() {
                sample(
                    &mut out,
                    "tether_requests_total",
                    &[("vhost", &m.label), ("class", &format!("{}xx", i + 1))],
                    n.load(Ordering::Relaxed) as f64,
                );
            }
        }

        family(
            &mut out,
            "tether_request_duration_seconds",
            "histogram",
            "Time from a request head to the end of its answer.",
        );
        for m in v {
            let mut cumulative = 0u64;
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += m.duration.buckets[i].load(Ordering::Relaxed);
                sample(
                    &mut out,
                    "tether_request_duration_seconds_bucket",
                    &[("vhost", &m.label), ("le", &b.to_string())],
                    cumulative as f64,
                );
            }
            let count = m.duration.count.load(Ordering::Relaxed);
            sample(
                &mut out,
                "tether_request_duration_seconds_bucket",
                &[("vhost", &m.label), ("le", "+Inf")],
                count as f64,
            );
            sample(
                &mut out,
                "tether_request_duration_seconds_sum",
                &[("vhost", &m.label)],
                m.duration.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            );
            sample(
                &mut out,
                "tether_request_duration_seconds_count",
                &[("vhost", &m.label)],
                count as f64,
            );
        }

        family(
            &mut out,
            "tether_upstream_errors_total",
            "counter",
            "Client requests that failed because an origin or worker failed.",
        );
        for m in v {
            for (i, kind) in UPSTREAM_KINDS.iter().enumerate() {
                sample(
                    &mut out,
                    "tether_upstream_errors_total",
                    &[("vhost", &m.label), ("kind", kind)],
                    m.upstream_errors[i].load(Ordering::Relaxed) as f64,
                );
            }
        }

        family(
            &mut out,
            "tether_connections_active",
            "gauge",
            "Open client connections, by listener.",
        );
        for (addr, g) in self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            sample(
                &mut out,
                "tether_connections_active",
                &[("listener", addr)],
                g.load(Ordering::Relaxed) as f64,
            );
        }

        family(
            &mut out,
            "tether_sessions",
            "gauge",
            "Live sessions, by state.",
        );
        for m in v.iter().filter(|m| !m.label.is_empty()) {
            for (i, state) in ["attached", "detached"].iter().enumerate() {
                sample(
                    &mut out,
                    "tether_sessions",
                    &[("vhost", &m.label), ("state", state)],
                    m.sessions[i].load(Ordering::Relaxed) as f64,
                );
            }
        }

        family(
            &mut out,
            "tether_sessions_opened_total",
            "counter",
            "Sessions opened, by client transport.",
        );
        for m in v.iter().filter(|m| !m.label.is_empty()) {
            sample(
                &mut out,
                "tether_sessions_opened_total",
                &[("vhost", &m.label), ("transport", "native")],
                m.opened_native.load(Ordering::Relaxed) as f64,
            );
            sample(
                &mut out,
                "tether_sessions_opened_total",
                &[("vhost", &m.label), ("transport", "websocket")],
                m.opened_websocket.load(Ordering::Relaxed) as f64,
            );
        }

        family(
            &mut out,
            "tether_sessions_ended_total",
            "counter",
            "Sessions ended, by reason.",
        );
        for m in v.iter().filter(|m| !m.label.is_empty()) {
            for (i, reason) in END_REASONS.iter().enumerate() {
                sample(
                    &mut out,
                    "tether_sessions_ended_total",
                    &[("vhost", &m.label), ("reason", reason)],
                    m.ended[i].load(Ordering::Relaxed) as f64,
                );
            }
        }

        family(
            &mut out,
            "tether_resumes_total",
            "counter",
            "Requests carrying a SessionID other than DELETE, by result.",
        );
        for m in v.iter().filter(|m| !m.label.is_empty()) {
            for (i, result) in ["ok", "gone", "bad_request"].iter().enumerate() {
                sample(
                    &mut out,
                    "tether_resumes_total",
                    &[("vhost", &m.label), ("result", result)],
                    m.resumes[i].load(Ordering::Relaxed) as f64,
                );
            }
        }

        family(
            &mut out,
            "tether_takeovers_total",
            "counter",
            "Resumes that closed an older attached connection.",
        );
        for m in v.iter().filter(|m| !m.label.is_empty()) {
            sample(
                &mut out,
                "tether_takeovers_total",
                &[("vhost", &m.label)],
                m.takeovers.load(Ordering::Relaxed) as f64,
            );
        }

        for (name, help, arr) in [
            (
                "tether_lines_total",
                "Session lines, counted once when first taken.",
                0,
            ),
            (
                "tether_bytes_total",
                "Session line bytes (LF included), counted once when first taken.",
                1,
            ),
        ] {
            family(&mut out, name, "counter", help);
            for m in v.iter().filter(|m| !m.label.is_empty()) {
                let values = if arr == 0 { &m.lines } else { &m.bytes };
                for (i, dir) in ["to_worker", "to_client"].iter().enumerate() {
                    sample(
                        &mut out,
                        name,
                        &[("vhost", &m.label), ("direction", dir)],
                        values[i].load(Ordering::Relaxed) as f64,
                    );
                }
            }
        }

        family(
            &mut out,
            "tether_replay_bytes",
            "gauge",
            "Bytes held in replay windows.",
        );
        for m in v.iter().filter(|m| !m.label.is_empty()) {
            sample(
                &mut out,
                "tether_replay_bytes",
                &[("vhost", &m.label)],
                m.replay_bytes.load(Ordering::Relaxed) as f64,
            );
        }
        family(
            &mut out,
            "tether_backlog_bytes",
            "gauge",
            "Worker output buffered and not yet sent toward clients.",
        );
        for m in v.iter().filter(|m| !m.label.is_empty()) {
            sample(
                &mut out,
                "tether_backlog_bytes",
                &[("vhost", &m.label)],
                m.backlog_bytes.load(Ordering::Relaxed) as f64,
            );
        }

        family(
            &mut out,
            "tether_affinity_entries",
            "gauge",
            "Entries in the SessionID affinity index.",
        );
        sample(
            &mut out,
            "tether_affinity_entries",
            &[],
            self.affinity_entries.load(Ordering::Relaxed) as f64,
        );

        family(
            &mut out,
            "tether_worker_sessions",
            "gauge",
            "Live sessions pinned to each worker.",
        );
        for w in workers {
            sample(
                &mut out,
                "tether_worker_sessions",
                &[("vhost", &w.vhost), ("worker", &w.worker)],
                w.sessions as f64,
            );
        }
        family(
            &mut out,
            "tether_worker_up",
            "gauge",
            "1 when the worker takes new sessions, 0 while it is down.",
        );
        for w in workers {
            sample(
                &mut out,
                "tether_worker_up",
                &[("vhost", &w.vhost), ("worker", &w.worker)],
                if w.up { 1.0 } else { 0.0 },
            );
        }

        family(
            &mut out,
            "tether_limits_hit_total",
            "counter",
            "Times a configured limit was reached, by kind.",
        );
        for (i, kind) in LIMIT_KINDS.iter().enumerate() {
            sample(
                &mut out,
                "tether_limits_hit_total",
                &[("kind", kind)],
                self.limits[i].load(Ordering::Relaxed) as f64,
            );
        }

        family(
            &mut out,
            "tether_config_reloads_total",
            "counter",
            "Configuration reloads, by result.",
        );
        sample(
            &mut out,
            "tether_config_reloads_total",
            &[("result", "ok")],
            self.reloads_ok.load(Ordering::Relaxed) as f64,
        );
        sample(
            &mut out,
            "tether_config_reloads_total",
            &[("result", "error")],
            self.reloads_error.load(Ordering::Relaxed) as f64,
        );

        family(
            &mut out,
            "tether_upgrades_total",
            "counter",
            "Binary upgrades (SIGUSR2), by result: ok by the new process, error by the one that goes on serving.",
        );
        for (result, c) in [("ok", &self.upgrades_ok), ("error", &self.upgrades_error)] {
            sample(
                &mut out,
                "tether_upgrades_total",
                &[("result", result)],
                c.load(Ordering::Relaxed) as f64,
            );
        }
        family(
            &mut out,
            "tether_handover_sessions_total",
            "counter",
            "Sessions this process received from the one it upgraded.",
        );
        sample(
            &mut out,
            "tether_handover_sessions_total",
            &[],
            self.handover_sessions.load(Ordering::Relaxed) as f64,
        );
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '"' => out.push_str("\\\""),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn typed_kinds_name_their_labels() {
        for (kind, label) in [
            (UpstreamKind::Connect, "connect"),
            (UpstreamKind::Reset, "reset"),
            (UpstreamKind::Timeout, "timeout"),
            (UpstreamKind::Protocol, "protocol"),
        ] {
            assert_eq!(UPSTREAM_KINDS[kind as usize], label);
        }
        for (kind, label) in [
            (EndKind::ClientEnd, "client_end"),
            (EndKind::WorkerEnd, "worker_end"),
            (EndKind::GraceExpired, "grace_expired"),
            (EndKind::ResumeGone, "resume_gone"),
            (EndKind::LineTooLong, "line_too_long"),
            (EndKind::WorkerStatus, "worker_status"),
            (EndKind::WorkerUnreachable, "worker_unreachable"),
            (EndKind::ProtocolError, "protocol_error"),
            (EndKind::Admin, "admin"),
            (EndKind::Shutdown, "shutdown"),
        ] {
            assert_eq!(END_REASONS[kind as usize], label);
        }
        assert_eq!(LIMIT_KINDS[Limit::BodyTimeout as usize], "body_timeout");
        assert_eq!(
            LIMIT_KINDS[Limit::WorkerSessions as usize],
            "worker_sessions"
        );
        assert_eq!(
            LIMIT_KINDS[Limit::UpstreamConnections as usize],
            "upstream_connections"
        );
    }

    use super::*;

    #[test]
    fn renders_families_with_escaped_labels() {
        let m = Metrics::default();
        let v = m.vhost("a\"b.test");
        v.response(204, Duration::from_millis(3));
        v.session_opened(true);
        v.response(502, Duration::from_secs(20));
        m.limit_hit(Limit::HeaderTimeout);
        let text = m.render(&[]);
        assert!(
            text.contains("tether_requests_total{vhost=\"a\\\"b.test\",class=\"2xx\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("tether_requests_total{vhost=\"a\\\"b.test\",class=\"5xx\"} 1\n"));
        assert!(text.contains(
            "tether_request_duration_seconds_bucket{vhost=\"a\\\"b.test\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains(
            "tether_request_duration_seconds_bucket{vhost=\"a\\\"b.test\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains("tether_limits_hit_total{kind=\"header_timeout\"} 1\n"));
        assert!(text.contains(
            "tether_sessions_opened_total{vhost=\"a\\\"b.test\",transport=\"websocket\"} 1\n"
        ));
        assert!(text.contains("# TYPE tether_request_duration_seconds histogram\n"));
    }
}
