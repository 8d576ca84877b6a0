//! The validated, typed configuration (SPEC section 1).
//!
//! Values here are already checked: the request path never re-reads strings.
//! Defaults live in the `Default` impls so that a file holding only `hosts`
//! and `origin` is complete.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::glob::PathGlob;

/// The whole file, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub vhosts: Vec<VhostConfig>,
    /// `[cluster]` (SPEC 11); None: a single instance.
    pub cluster: Option<ClusterConfig>,
}

impl Config {
    /// The authority of every origin and worker, each once.
    pub fn upstream_authorities(&self) -> Vec<&str> {
        let mut all: Vec<&str> = Vec::new();
        for v in &self.vhosts {
            all.push(&v.origin.authority);
            if let Some(p) = &v.persistent {
                all.extend(p.workers.iter().map(|w| w.authority.as_str()));
            }
        }
        all.sort_unstable();
        all.dedup();
        all
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub admin_listen: SocketAddr,
    /// None: the push API is off.
    pub admin_token: Option<String>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub origin_connect_timeout: Duration,
    pub origin_response_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub drain_timeout: Duration,
    /// Concurrent connections to one origin or worker URL (plain requests
    /// and message-mode POSTs; stream sessions count against
    /// `max_sessions_per_worker` instead).
    pub max_upstream_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            tls_listen: Vec::new(),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9900)),
            admin_token: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            origin_connect_timeout: Duration::from_secs(5),
            origin_response_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            max_connections: 20_000,
            max_connections_per_ip: 2_000,
            drain_timeout: Duration::from_secs(30),
            max_upstream_connections: 1024,
        }
    }
}

/// `[cluster]` (SPEC 11), validated.
#[derive(Clone, PartialEq)]
pub struct ClusterConfig {
    /// 1 to 16 of `[a-z0-9]`; ends every SessionID this instance mints.
    pub node: String,
    /// NATS server URLs (`nats://` or `tls://`).
    pub nats: Vec<String>,
    pub peer_listen: SocketAddr,
    /// What the other instances dial: `peer_advertise`, else `peer_listen`
    /// (never an unspecified address or port 0).
    pub peer_advertise: SocketAddr,
    pub peer_token: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: String::new(),
            nats: vec!["nats://127.0.0.1:4222".to_string()],
            peer_listen: SocketAddr::from(([0, 0, 0, 0], 7401)),
            peer_advertise: SocketAddr::from(([0, 0, 0, 0], 7401)),
            peer_token: String::new(),
        }
    }
}

/// The secret never reaches a log line through `{:?}`.
impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node", &self.node)
            .field("nats", &self.nats)
            .field("peer_listen", &self.peer_listen)
            .field("peer_advertise", &self.peer_advertise)
            .field("peer_token", &"<secret>")
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct VhostConfig {
    /// Lower-cased host names without port; `"*"` marks the default vhost.
    pub hosts: Vec<String>,
    pub origin: OriginUrl,
    pub tls: Option<TlsConfig>,
    /// None when the table is absent or `enabled = false`.
    pub persistent: Option<PersistentConfig>,
}

impl VhostConfig {
    /// The metrics label of SPEC 9: the first entry of `hosts`.
    pub fn label(&self) -> &str {
        // A validated vhost always has a host; a hand-built one may not.
        self.hosts.first().map_or("", String::as_str)
    }
}

/// An `http://host:port` upstream (origin or worker). Only plain `http` is
/// supported upstream; `authority` is what goes on the wire, `as_written`
/// is the URL as configured (used as a metric label).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginUrl {
    pub as_written: String,
    /// `host[:port]` as written, without scheme.
    pub authority: String,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Requests that came over plain HTTP get `308` to the same host and
    /// target over https.
    pub redirect_http: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    Stream,
    Message,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PersistentConfig {
    /// Globs as written (for logs and docs).
    pub paths: Vec<String>,
    /// The same globs compiled, in the same order; match with these.
    pub globs: Vec<PathGlob>,
    pub workers: Vec<OriginUrl>,
    pub mode: SessionMode,
    /// Lower-cased `type/subtype` media types.
    pub accept: Vec<String>,
    pub resume_grace: Duration,
    pub replay_window: usize,
    pub detached_backlog: usize,
    pub max_line: usize,
    pub max_initial_body: usize,
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    pub max_lines_per_second: u32,
    /// Lower-cased `scheme://host[:port]` values.
    pub allowed_origins: Vec<String>,
    /// Live sessions pinned to one worker; when every worker is full a new
    /// session gets `503` (the workers are not down).
    pub max_sessions_per_worker: usize,
    /// The grace of a session whose channel never carried a line (at most
    /// `resume_grace`): open-and-drop costs a worker little.
    pub unused_grace: Duration,
    /// Message mode: how long a worker that refuses or does not accept
    /// connections is waited for before its sessions end (SPEC 6);
    /// zero: not at all.
    pub worker_retry: Duration,
    /// A browser navigation (`GET` with `Accept` listing `text/html`) to a
    /// candidate path opens a session whose page carries its SessionID
    /// (SPEC 12).
    pub page_sessions: bool,
    /// Message mode: how client lines go to the worker.
    pub message_format: MessageFormat,
}

/// How message mode sends client lines (SPEC 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageFormat {
    /// Whole lines, batched, `text/plain`.
    #[default]
    Lines,
    /// One line per request, without its LF, as
    /// `application/x-www-form-urlencoded` (PHP's `$_POST`).
    Form,
}

impl PersistentConfig {
    /// Defaults of SPEC 1; `workers` defaults to the vhost's origin.
    pub fn with_defaults(origin: &OriginUrl) -> Self {
        PersistentConfig {
            paths: vec!["*.pphp".to_string()],
            globs: vec![PathGlob::new("*.pphp").expect("the default glob is valid")],
            workers: vec![origin.clone()],
            mode: SessionMode::Stream,
            accept: vec!["application/x-persistent".to_string()],
            resume_grace: Duration::from_secs(120),
            replay_window: 256 * 1024,
            detached_backlog: 1024 * 1024,
            max_line: 64 * 1024,
            max_initial_body: 4 * 1024 * 1024,
            max_sessions: 100_000,
            max_sessions_per_ip: 1_000,
            max_lines_per_second: 10_000,
            allowed_origins: Vec::new(),
            max_sessions_per_worker: 10_000,
            unused_grace: Duration::from_secs(30),
            worker_retry: Duration::from_secs(30),
            page_sessions: false,
            message_format: MessageFormat::Lines,
        }
    }
}
