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

/// Upper bounds of `tether_request_duration_seconds`, in seconds; also of
/// the resume and message-request histograms, which measure exchanges of
/// the same order.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of `tether_session_duration_seconds`: sessions live from
/// seconds (a closed tab) to days (a terminal left open).
const SESSION_BUCKETS: [f64; 10] = [
    1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 43200.0, 86400.0,
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

struct Histogram {
    bounds: &'static [f64],
    /// Not cumulative: one count per bound, summed at scrape time.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new(&BUCKETS)
    }
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, vhost: &str) {
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, b) in self.bounds.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            sample(
                out,
                &bucket,
                &[("vhost", vhost), ("le", &b.to_string())],
                cumulative as f64,
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        sample(
            out,
            &bucket,
            &[("vhost", vhost), ("le", "+Inf")],
            count as f64,
        );
        sample(
            out,
            &format!("{name}_sum"),
            &[("vhost", vhost)],
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
        sample(
            out,
            &format!("{name}_count"),
            &[("vhost", vhost)],
            count as f64,
        );
    }
}

/// `tether_upstream_errors_by_upstream_total` of one origin or worker of
/// one vhost. Resolved when a config load names the upstream and carried
/// with it (the vhost's origin, each `Worker`), so that counting an error
/// takes no lock; it counts the vhost's `tether_upstream_errors_total` too,
/// so that the two families cannot disagree.
#[derive(Clone)]
pub(crate) struct UpstreamErrors {
    vhost: Arc<VhostMetrics>,
    counts: Arc<[AtomicU64; UPSTREAM_KINDS.len()]>,
}

impl std::fmt::Debug for UpstreamErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpstreamErrors({:?})", self.vhost.label)
    }
}

impl UpstreamErrors {
    /// One client request (or message-mode request) failed because this
    /// upstream did.
    pub(crate) fn count(&self, kind: UpstreamKind) {
        self.vhost.upstream_error(kind);
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Every per-vhost family, for one vhost label.
#[derive(Default)]
pub(crate) struct VhostMetrics {
    label: String,
    requests: [AtomicU64; 5],
    duration: Histogram,
    session_duration: Histogram,
    resume_duration: Histogram,
    message_duration: Histogram,
    upstream_errors: [AtomicU64; 4],
    /// By upstream as written; locked when a config load names an upstream
    /// and at scrape time only.
    by_upstream: Mutex<BTreeMap<String, Arc<[AtomicU64; UPSTREAM_KINDS.len()]>>>,
    sessions: [AtomicI64; 2],
    opened_native: AtomicU64,
    opened_websocket: AtomicU64,
    opened_page: AtomicU64,
    opened_http: AtomicU64,
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

    /// Counts an upstream error of this vhost whose upstream is not known
    /// (an answer's body that failed after its head); otherwise
    /// [`UpstreamErrors::count`].
    pub(crate) fn upstream_error(&self, kind: UpstreamKind) {
        self.upstream_errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The error counters of `upstream` (an origin or worker URL as
    /// written) under this vhost; for config load, never per request.
    pub(crate) fn upstream(self: &Arc<Self>, upstream: &str) -> UpstreamErrors {
        let counts = self
            .by_upstream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(upstream.to_owned())
            .or_default()
            .clone();
        UpstreamErrors {
            vhost: self.clone(),
            counts,
        }
    }

    /// A session ended after living `lived`.
    pub(crate) fn session_lived(&self, lived: Duration) {
        self.session_duration.observe(lived);
    }

    /// A resume answered (native: its `200` head; WebSocket: its open
    /// record) `took` after it arrived.
    pub(crate) fn resume_took(&self, took: Duration) {
        self.resume_duration.observe(took);
    }

    /// A message-mode request to a worker answered its head `took` after
    /// it was first sent, retries included.
    pub(crate) fn message_request_took(&self, took: Duration) {
        self.message_duration.observe(took);
    }

    pub(crate) fn session_state(&self, state: SessionState, delta: i64) {
        self.sessions[state as usize].fetch_add(delta, Ordering::Relaxed);
    }

    pub(crate) fn session_opened(&self, transport: OpenedOver) {
        let c = match transport {
            OpenedOver::Native => &self.opened_native,
            OpenedOver::WebSocket => &self.opened_websocket,
            OpenedOver::Page => &self.opened_page,
            OpenedOver::Http => &self.opened_http,
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

/// The `transport` label of `tether_sessions_opened_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenedOver {
    Native,
    WebSocket,
    /// A browser navigation: the page is the session (SPEC 12).
    Page,
    /// The HTTP transport: Server-Sent Events down, POSTs up (SPEC 13).
    Http,
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
    /// SPEC 11; rendered only by an instance in a cluster.
    pub(crate) cluster: ClusterMetrics,
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
                    session_duration: Histogram::new(&SESSION_BUCKETS),
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
            m.duration
                .render(&mut out, "tether_request_duration_seconds", &m.label);
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
            "tether_upstream_errors_by_upstream_total",
            "counter",
            "tether_upstream_errors_total by origin or worker (the URL as configured).",
        );
        for m in v {
            let by = m.by_upstream.lock().unwrap_or_else(PoisonError::into_inner);
            for (upstream, counts) in by.iter() {
                for (i, kind) in UPSTREAM_KINDS.iter().enumerate() {
                    sample(
                        &mut out,
                        "tether_upstream_errors_by_upstream_total",
                        &[("vhost", &m.label), ("upstream", upstream), ("kind", kind)],
                        counts[i].load(Ordering::Relaxed) as f64,
                    );
                }
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
            sample(
                &mut out,
                "tether_sessions_opened_total",
                &[("vhost", &m.label), ("transport", "page")],
                m.opened_page.load(Ordering::Relaxed) as f64,
            );
            sample(
                &mut out,
                "tether_sessions_opened_total",
                &[("vhost", &m.label), ("transport", "http")],
                m.opened_http.load(Ordering::Relaxed) as f64,
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

        self.cluster.render(&mut out);

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

        for (name, help, pick) in [
            (
                "tether_session_duration_seconds",
                "Lifetime of ended sessions, from open to end.",
                0,
            ),
            (
                "tether_resume_duration_seconds",
                "Time from a successful resume to its answer (native head or WebSocket open record).",
                1,
            ),
            (
                "tether_message_request_duration_seconds",
                "Time from a message-mode request to the worker's answer head, retries included.",
                2,
            ),
        ] {
            family(&mut out, name, "histogram", help);
            for m in v.iter().filter(|m| !m.label.is_empty()) {
                let h = match pick {
                    0 => &m.session_duration,
                    1 => &m.resume_duration,
                    _ => &m.message_duration,
                };
                h.render(&mut out, name, &m.label);
            }
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
        family(
            &mut out,
            "tether_build_info",
            "gauge",
            "Always 1; the version of the running binary is its label.",
        );
        sample(
            &mut out,
            "tether_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        render_process(&mut out);
        out
    }
}

/// The `process_*` families of the Prometheus client libraries, read from
/// `/proc` at scrape time; a figure that cannot be read is left out rather
/// than reported as 0.
fn render_process(out: &mut String) {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // Fields after the command name, which may hold spaces: `state` is
    // index 0, `utime` 11, `stime` 12, `starttime` 19 (proc(5) 3, 14, 15, 22).
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(") "))
        .map(|(_, rest)| rest.split(' ').collect())
        .unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let ticks = rustix::param::clock_ticks_per_second() as f64;

    if let (Some(user), Some(system)) = (field(11), field(12)) {
        family(
            out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, in seconds.",
        );
        sample(
            out,
            "process_cpu_seconds_total",
            &[],
            (user + system) as f64 / ticks,
        );
    }
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
    if let Some(kib) = rss_kib {
        family(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, in bytes.",
        );
        sample(
            out,
            "process_resident_memory_bytes",
            &[],
            (kib * 1024) as f64,
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        family(out, "process_open_fds", "gauge", "Open file descriptors.");
        // The directory handle being read is one of them.
        let open = dir.count().saturating_sub(1);
        sample(out, "process_open_fds", &[], open as f64);
    }
    if let Some(max) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        family(
            out,
            "process_max_fds",
            "gauge",
            "The soft limit on open file descriptors.",
        );
        sample(out, "process_max_fds", &[], max as f64);
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(19)) {
        family(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        sample(
            out,
            "process_start_time_seconds",
            &[],
            boot as f64 + start as f64 / ticks,
        );
    }
}

/// What a relay to an owner was (`tether_cluster_forwarded_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forwarded {
    Resume = 0,
    Push = 1,
    Delete = 2,
}

/// How it went (`result`): served by the owner, owner absent, or failed
/// (NATS or the peer connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardResult {
    Ok = 0,
    Gone = 1,
    Error = 2,
}

/// Why a peer connection was refused (`tether_cluster_peer_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerRefusal {
    /// The challenge was answered with a wrong HMAC.
    Token = 0,
    /// Anything else: garbage, a bad preamble, too slow.
    Protocol = 1,
}

/// The families of SPEC 11 (cluster), and the peer refusals of docs/cluster.md.
#[derive(Default)]
pub(crate) struct ClusterMetrics {
    enabled: std::sync::atomic::AtomicBool,
    nodes: AtomicI64,
    nats_connected: AtomicI64,
    forwarded: [AtomicU64; 9],
    refused: [AtomicU64; 2],
}

impl ClusterMetrics {
    pub(crate) fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
        self.nodes.store(1, Ordering::Relaxed);
    }

    pub(crate) fn set_nodes(&self, n: usize) {
        self.nodes.store(n as i64, Ordering::Relaxed);
    }

    pub(crate) fn set_nats_connected(&self, up: bool) {
        self.nats_connected.store(i64::from(up), Ordering::Relaxed);
    }

    pub(crate) fn forwarded(&self, kind: Forwarded, result: ForwardResult) {
        self.forwarded[kind as usize * 3 + result as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, why: PeerRefusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        if !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        family(
            out,
            "tether_cluster_nodes",
            "gauge",
            "Instances present in the cluster, this one included.",
        );
        sample(
            out,
            "tether_cluster_nodes",
            &[],
            self.nodes.load(Ordering::Relaxed) as f64,
        );
        family(
            out,
            "tether_cluster_nats_connected",
            "gauge",
            "1 while connected to a NATS server, else 0.",
        );
        sample(
            out,
            "tether_cluster_nats_connected",
            &[],
            self.nats_connected.load(Ordering::Relaxed) as f64,
        );
        family(
            out,
            "tether_cluster_forwarded_total",
            "counter",
            "Resumes, pushes and DELETEs this instance relayed to their owner.",
        );
        for (k, kind) in ["resume", "push", "delete"].iter().enumerate() {
            for (r, result) in ["ok", "gone", "error"].iter().enumerate() {
                sample(
                    out,
                    "tether_cluster_forwarded_total",
                    &[("kind", kind), ("result", result)],
                    self.forwarded[k * 3 + r].load(Ordering::Relaxed) as f64,
                );
            }
        }
        family(
            out,
            "tether_cluster_peer_refused_total",
            "counter",
            "Peer connections closed unauthenticated: wrong token, or not the peer protocol.",
        );
        for (i, reason) in ["token", "protocol"].iter().enumerate() {
            sample(
                out,
                "tether_cluster_peer_refused_total",
                &[("reason", reason)],
                self.refused[i].load(Ordering::Relaxed) as f64,
            );
        }
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
        v.session_opened(OpenedOver::WebSocket);
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

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn operator_families_beyond_spec_9() {
        let m = Metrics::default();
        let v = m.vhost("a.test");
        v.session_lived(Duration::from_secs(90));
        v.resume_took(Duration::from_millis(7));
        v.message_request_took(Duration::from_millis(30));
        let origin = v.upstream("http://127.0.0.1:8080");
        let worker = v.upstream("http://127.0.0.1:9000");
        origin.count(UpstreamKind::Timeout);
        worker.count(UpstreamKind::Connect);
        worker.count(UpstreamKind::Connect);
        // The same upstream named again (a reload) keeps its counts.
        v.upstream("http://127.0.0.1:9000")
            .count(UpstreamKind::Connect);
        let text = m.render(&[]);

        let session = "tether_session_duration_seconds_bucket{vhost=\"a.test\",le=";
        assert_eq!(value(&text, &format!("{session}\"60\"}}")), 0.0);
        assert_eq!(value(&text, &format!("{session}\"300\"}}")), 1.0);
        assert_eq!(value(&text, &format!("{session}\"+Inf\"}}")), 1.0);
        assert_eq!(
            value(
                &text,
                "tether_session_duration_seconds_sum{vhost=\"a.test\"}"
            ),
            90.0
        );
        assert_eq!(
            value(
                &text,
                "tether_resume_duration_seconds_bucket{vhost=\"a.test\",le=\"0.01\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "tether_message_request_duration_seconds_bucket{vhost=\"a.test\",le=\"0.025\"}"
            ),
            0.0
        );
        assert_eq!(
            value(
                &text,
                "tether_message_request_duration_seconds_count{vhost=\"a.test\"}"
            ),
            1.0
        );

        let by = |upstream: &str, kind: &str| {
            value(
                &text,
                &format!("tether_upstream_errors_by_upstream_total{{vhost=\"a.test\",upstream=\"{upstream}\",kind=\"{kind}\"}}"),
            )
        };
        assert_eq!(by("http://127.0.0.1:9000", "connect"), 3.0);
        assert_eq!(by("http://127.0.0.1:8080", "timeout"), 1.0);
        assert_eq!(by("http://127.0.0.1:8080", "connect"), 0.0);
        assert_eq!(
            value(
                &text,
                "tether_upstream_errors_total{vhost=\"a.test\",kind=\"connect\"}"
            ),
            3.0,
            "the vhost family counts the same errors"
        );

        let version = format!(
            "tether_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(value(&text, &version), 1.0);

        // The process figures of this very test process.
        let fds = value(&text, "process_open_fds");
        let max = value(&text, "process_max_fds");
        assert!(fds >= 3.0 && fds < max, "{fds} of {max}");
        // Other tests of this process open and close files meanwhile, so
        // the count is compared with 64 more files held open, not exactly.
        let files: Vec<_> = (0..64)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let more = value(&m.render(&[]), "process_open_fds");
        drop(files);
        assert!(more >= fds + 48.0, "64 files more: {fds} -> {more}");
        let rss = value(&text, "process_resident_memory_bytes");
        assert!(rss > 1e6 && rss < 1e10, "{rss}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value(&text, "process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
        let cpu_before = value(&text, "process_cpu_seconds_total");
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let cpu_after = value(&m.render(&[]), "process_cpu_seconds_total");
        assert!(cpu_after >= cpu_before + 0.1, "{cpu_before} -> {cpu_after}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(text.contains("# TYPE tether_session_duration_seconds histogram\n"));
    }
}
