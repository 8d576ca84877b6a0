//! The cluster of SPEC 11: several instances, one set of sessions.
//!
//! - membership and routing of push and `DELETE` go through NATS core
//!   publish/subscribe and request/reply (this module); no JetStream: the
//!   state is soft (who is present, heard at least every second) and a
//!   request goes to the one instance that owns the session;
//! - resumes travel over authenticated peer connections ([`peer`]): the
//!   receiving instance copies bytes both ways ([`relay`]) and the owner
//!   serves them as any client connection.
//!
//! Nothing a local session or a plain request does waits on anything here:
//! the only callers are resumes, pushes and `DELETE`s whose SessionID names
//! another instance.

pub(crate) mod peer;
pub(crate) mod relay;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Request};
use bytes::Bytes;
use futures_util::StreamExt;
use tether_wire::SessionId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterConfig, ServerConfig};
use crate::metrics::{ForwardResult, Forwarded, Metrics};

/// How often an instance announces itself.
const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// An instance not heard for this long is gone (SPEC 11).
const SILENCE: Duration = Duration::from_secs(5);
/// How long the start waits for NATS before it goes on without it.
const START_WAIT: Duration = Duration::from_secs(2);
/// Subject every instance announces itself on.
const ANNOUNCE: &str = "tether.cluster.announce";

/// Another instance as last heard.
#[derive(Debug, Clone)]
struct Member {
    peer: SocketAddr,
    instance: String,
    seen: Instant,
}

/// What another instance may ask of this node's own sessions, answered
/// with the status the asking instance passes on: `push` (the push API),
/// `admin-end` (the push API's `DELETE`) and `end` (a client's `DELETE`,
/// payload: the asking vhost's hosts, one per line). The session layer
/// above implements it; the cluster only carries the question.
pub(crate) trait OwnSessions: Send + Sync + 'static {
    fn answer<'a>(
        &'a self,
        op: &'a str,
        sid: &'a str,
        payload: Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = u16> + Send + 'a>>;
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    #[error("another instance already runs as node \"{0}\" in this cluster; every node needs its own name")]
    Duplicate(String),
    /// With `retry_on_initial_connect` only a client that cannot even
    /// try (no usable address) fails here.
    #[error("cannot set up the NATS client: {0}")]
    Nats(String),
    #[error("cannot listen on peer_listen {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Where a SessionID's session lives.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This instance (or a SessionID minted by a single instance).
    Here,
    /// Another instance that is present, reached at this peer address.
    Peer(SocketAddr),
    /// Another instance that is not present: the one `410`.
    Absent,
}

/// What a push or `DELETE` relayed over NATS came to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Remote {
    /// The owner's status.
    Status(u16),
    /// The owner is not present.
    Absent,
    /// NATS unreachable, or no answer in time: `503` with `Retry-After: 1`.
    Unreachable,
}

/// This instance's side of the cluster.
pub(crate) struct Cluster {
    pub(crate) node: Arc<str>,
    advertise: SocketAddr,
    /// Tells this process from an earlier or later one with the same node.
    instance: String,
    pub(crate) key: ring::hmac::Key,
    members: Mutex<HashMap<String, Member>>,
    nats: Client,
    pub(crate) metrics: Arc<Metrics>,
    /// Connect and handshake with an owner, and NATS requests (SPEC 11:
    /// `origin_connect_timeout`).
    pub(crate) reach_timeout: Duration,
    pub(crate) answer_timeout: Duration,
    pub(crate) max_header_bytes: usize,
    stop: CancellationToken,
}

impl Cluster {
    /// Connects to NATS (waiting up to 2 s; an instance that cannot reach
    /// NATS still starts, and connects when it can), refuses a node name
    /// another instance already runs as, and starts announcing.
    pub(crate) async fn start(
        config: &ClusterConfig,
        server: &ServerConfig,
        sessions: Arc<dyn OwnSessions>,
        metrics: Arc<Metrics>,
        check_name: bool,
    ) -> Result<Arc<Cluster>, ClusterError> {
        metrics.cluster.enable();
        let gauge = metrics.clone();
        let urls: Vec<async_nats::ServerAddr> =
            config.nats.iter().filter_map(|u| u.parse().ok()).collect();
        let nats = ConnectOptions::new()
            .name(format!("tether {}", config.node))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            // Reconnect soon after NATS comes back: membership and remote
            // pushes wait on it.
            .reconnect_delay_callback(|n| Duration::from_millis((100 * n as u64).min(1000)))
            .request_timeout(Some(server.origin_connect_timeout))
            // The gauge follows the connection as it changes, not only at
            // the next announcement.
            .event_callback(move |event| {
                let gauge = gauge.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => gauge.cluster.set_nats_connected(true),
                        async_nats::Event::Disconnected => gauge.cluster.set_nats_connected(false),
                        _ => {}
                    }
                }
            })
            .connect(urls)
            .await
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        let deadline = Instant::now() + START_WAIT;
        while !connected(&nats) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut instance = [0u8; 12];
        getrandom::fill(&mut instance).expect("the operating system's random source failed");
        let instance: String = instance.iter().map(|b| format!("{b:02x}")).collect();
        let cluster = Arc::new(Cluster {
            node: Arc::from(config.node.as_str()),
            advertise: config.peer_advertise,
            instance,
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, config.peer_token.as_bytes()),
            members: Mutex::new(HashMap::new()),
            nats,
            metrics,
            reach_timeout: server.origin_connect_timeout,
            answer_timeout: server.origin_response_timeout,
            max_header_bytes: server.max_header_bytes,
            stop: CancellationToken::new(),
        });
        cluster
            .metrics
            .cluster
            .set_nats_connected(connected(&cluster.nats));
        if !check_name {
            // An upgrade's new process: the old one answers for the name.
        } else if connected(&cluster.nats) {
            cluster.refuse_duplicate().await?;
        } else {
            tracing::warn!(
                target: "tether",
                "NATS is not reachable: starting without the cluster's membership (a duplicate node name cannot be checked); connecting in the background"
            );
        }
        tokio::spawn(cluster.clone().announce());
        tokio::spawn(cluster.clone().learn());
        tokio::spawn(cluster.clone().serve_requests(sessions));
        Ok(cluster)
    }

    /// Stops announcing (the drain): the others forget this instance after
    /// its silence.
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// Asks whoever runs as this node to say so; an answer means the name
    /// is taken (SPEC 11: the later one refuses to start).
    async fn refuse_duplicate(&self) -> Result<(), ClusterError> {
        let subject = format!("tether.node.{}.who", self.node);
        let request = Request::new()
            .payload(Bytes::from(self.instance.clone()))
            .timeout(Some(Duration::from_secs(1)));
        match self.nats.send_request(subject, request).await {
            Ok(_) => Err(ClusterError::Duplicate(self.node.to_string())),
            // No responders (or none in time): the name is free.
            Err(_) => Ok(()),
        }
    }

    fn members(&self) -> std::sync::MutexGuard<'_, HashMap<String, Member>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the NATS connection is up now.
    pub(crate) fn nats_up(&self) -> bool {
        connected(&self.nats)
    }

    /// Who owns `id`. A SessionID naming no other instance is this one's.
    pub(crate) fn owner(&self, id: &SessionId) -> Owner {
        match id.owner() {
            None => Owner::Here,
            Some(node) if node == &*self.node => Owner::Here,
            Some(node) => match self.members().get(node) {
                Some(m) => Owner::Peer(m.peer),
                None => Owner::Absent,
            },
        }
    }

    /// The owner node of `id` when it is another instance.
    pub(crate) fn remote_node<'a>(&self, id: &'a SessionId) -> Option<&'a str> {
        id.owner().filter(|n| *n != &*self.node)
    }

    /// Announces this instance every second; forgets instances silent for
    /// 5 s, except while NATS itself is down (nothing can be heard then:
    /// resumes go by the last membership, SPEC 11).
    async fn announce(self: Arc<Self>) {
        let payload = Bytes::from(format!(
            "node={}&peer={}&instance={}",
            self.node, self.advertise, self.instance
        ));
        let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
        let mut was_up = self.nats_up();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.stop.cancelled() => return,
            }
            let up = self.nats_up();
            self.metrics.cluster.set_nats_connected(up);
            if up {
                let _ = self.nats.publish(ANNOUNCE, payload.clone()).await;
                let now = Instant::now();
                let mut members = self.members();
                if !was_up {
                    // Back from an outage: everyone gets a fresh 5 s to be
                    // heard again.
                    for m in members.values_mut() {
                        m.seen = now;
                    }
                }
                members.retain(|node, m| {
                    let present = now.duration_since(m.seen) < SILENCE;
                    if !present {
                        tracing::info!(target: "tether", node = %node, "cluster: instance gone (silent for 5 s)");
                    }
                    present
                });
                self.metrics.cluster.set_nodes(members.len() + 1);
            }
            was_up = up;
        }
    }

    /// Learns the others from their announcements.
    async fn learn(self: Arc<Self>) {
        let mut sub = loop {
            match self.nats.subscribe(ANNOUNCE).await {
                Ok(sub) => break sub,
                Err(_) => tokio::time::sleep(ANNOUNCE_EVERY).await,
            }
        };
        loop {
            let msg = tokio::select! {
                m = sub.next() => m,
                _ = self.stop.cancelled() => return,
            };
            let Some(msg) = msg else { return };
            let Some((node, peer, instance)) = parse_announce(&msg.payload) else {
                continue;
            };
            if node == &*self.node {
                if instance != self.instance {
                    tracing::error!(target: "tether", node = %node, "cluster: another instance announces this node's name; SessionIDs of both are ambiguous");
                }
                continue;
            }
            let mut members = self.members();
            let fresh = !members.contains_key(node);
            if members.get(node).is_some_and(|m| m.instance != instance) {
                // Its old sessions died with the old process: resumes get
                // the new one's 410.
                tracing::info!(target: "tether", node = %node, "cluster: instance restarted");
            }
            members.insert(
                node.to_string(),
                Member {
                    peer,
                    instance: instance.to_string(),
                    seen: Instant::now(),
                },
            );
            self.metrics.cluster.set_nodes(members.len() + 1);
            drop(members);
            if fresh {
                tracing::info!(target: "tether", node = %node, %peer, "cluster: instance joined");
            }
        }
    }

    /// Answers what other instances ask of this node: who runs it, and the
    /// pushes and `DELETE`s of its sessions (SPEC 11), through the same
    /// calls as the admin listener and a local `DELETE`.
    async fn serve_requests(self: Arc<Self>, sessions: Arc<dyn OwnSessions>) {
        let subject = format!("tether.node.{}.>", self.node);
        let mut sub = loop {
            match self.nats.subscribe(subject.clone()).await {
                Ok(sub) => break sub,
                Err(_) => tokio::time::sleep(ANNOUNCE_EVERY).await,
            }
        };
        let prefix = format!("tether.node.{}.", self.node);
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let Some(rest) = msg.subject.as_str().strip_prefix(&prefix) else {
                continue;
            };
            let rest = rest.to_string();
            let (sessions, nats) = (sessions.clone(), self.nats.clone());
            let me = self.clone();
            // One task per request: a push waiting on a busy session holds
            // up no other.
            tokio::spawn(async move {
                let status = me.answer(&*sessions, &rest, msg.payload).await;
                let Some(status) = status else { return };
                let _ = nats.publish(reply, Bytes::from(status.to_string())).await;
            });
        }
    }

    async fn answer(&self, sessions: &dyn OwnSessions, rest: &str, payload: Bytes) -> Option<u16> {
        let (op, sid) = rest.split_once('.').unwrap_or((rest, ""));
        match op {
            "who" => (payload != self.instance.as_bytes()).then_some(200),
            "push" | "admin-end" | "end" => Some(sessions.answer(op, sid, payload).await),
            _ => None,
        }
    }

    /// Relays `op` for session `sid` to its owner `node` over NATS.
    async fn request(&self, node: &str, op: &str, sid: &SessionId, payload: Bytes) -> Remote {
        if !self.nats_up() {
            return Remote::Unreachable;
        }
        if !self.members().contains_key(node) {
            return Remote::Absent;
        }
        let subject = format!("tether.node.{node}.{op}.{sid}");
        let request = Request::new()
            .payload(payload)
            .timeout(Some(self.answer_timeout));
        match self.nats.send_request(subject, request).await {
            Ok(msg) => std::str::from_utf8(&msg.payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .map_or(Remote::Unreachable, Remote::Status),
            Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => Remote::Absent,
            Err(_) => Remote::Unreachable,
        }
    }

    /// The push API for a session of another instance.
    pub(crate) async fn push(&self, node: &str, sid: &SessionId, body: Bytes) -> Remote {
        let r = self.request(node, "push", sid, body).await;
        self.count(Forwarded::Push, &r, 404);
        r
    }

    /// The push API's `DELETE` for a session of another instance.
    pub(crate) async fn admin_end(&self, node: &str, sid: &SessionId) -> Remote {
        let r = self.request(node, "admin-end", sid, Bytes::new()).await;
        self.count(Forwarded::Delete, &r, 404);
        r
    }

    /// A client's `DELETE` for a session of another instance, on a vhost
    /// serving `hosts`.
    pub(crate) async fn end(&self, node: &str, sid: &SessionId, hosts: &[String]) -> Remote {
        let r = self
            .request(node, "end", sid, Bytes::from(hosts.join("\n")))
            .await;
        self.count(Forwarded::Delete, &r, 410);
        r
    }

    fn count(&self, kind: Forwarded, r: &Remote, gone: u16) {
        let result = match r {
            Remote::Status(s) if *s == gone => ForwardResult::Gone,
            Remote::Status(_) => ForwardResult::Ok,
            Remote::Absent => ForwardResult::Gone,
            Remote::Unreachable => ForwardResult::Error,
        };
        self.metrics.cluster.forwarded(kind, result);
    }
}

fn connected(nats: &Client) -> bool {
    nats.connection_state() == async_nats::connection::State::Connected
}

/// `node=..&peer=..&instance=..`.
fn parse_announce(payload: &[u8]) -> Option<(&str, SocketAddr, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (mut node, mut peer, mut instance) = (None, None, None);
    for pair in text.split('&') {
        match pair.split_once('=')? {
            ("node", v) => node = Some(v),
            ("peer", v) => peer = v.parse().ok(),
            ("instance", v) => instance = Some(v),
            _ => {}
        }
    }
    let node = node.filter(|n| crate::config::valid_node(n))?;
    Some((node, peer?, instance?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_parse() {
        let (node, peer, instance) =
            parse_announce(b"node=gw2&peer=127.0.0.1:7402&instance=ab12").unwrap();
        assert_eq!((node, instance), ("gw2", "ab12"));
        assert_eq!(peer, "127.0.0.1:7402".parse::<SocketAddr>().unwrap());
        assert!(parse_announce(b"node=GW2&peer=127.0.0.1:7402&instance=a").is_none());
        assert!(parse_announce(b"node=gw2&peer=nowhere&instance=a").is_none());
        assert!(parse_announce(b"garbage").is_none());
    }
}
