//! The affinity index (`SessionID -> SessionHandle`, a moka cache) and the
//! exact session counters behind `max_sessions` and `max_sessions_per_ip`.
//!
//! The cache has no capacity bound and no expiry: moka evicts and expires
//! lazily, and its admission policy could turn away a new session or evict
//! a live one. The session task owns its lifetime (grace timer included)
//! and removes its own entry when it ends; limits are exact counters here,
//! never `entry_count()`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use moka::sync::Cache;
use tether_wire::SessionId;

use super::balance::WorkerPool;
use super::mailbox::Mailbox;
use super::task::Command;
use super::VhostScope;
use crate::client_addr::{limit_key, PerAddress};
use crate::metrics::{Limit, Metrics};

/// What the affinity index maps a SessionID to: a way to talk to the
/// session's task, and the vhost it is bound to.
#[derive(Clone)]
pub(crate) struct SessionHandle {
    pub(crate) id: SessionId,
    /// The hosts of the vhost that opened it: it may be resumed on the
    /// vhost that serves them, also after a reload renamed the vhost.
    pub(crate) hosts: Arc<[String]>,
    pub(crate) mailbox: Arc<Mailbox>,
    /// The session's `max_line` (the push API checks lines against it).
    pub(crate) max_line: usize,
}

impl SessionHandle {
    /// Asks the session to leave this process (upgrade); its state comes
    /// on the receiver once no message request is on its way. `None` if
    /// it has ended.
    pub(crate) fn move_out(&self) -> Option<tokio::sync::oneshot::Receiver<super::Moved>> {
        let (reply, moved) = tokio::sync::oneshot::channel();
        self.mailbox.send(Command::Move { reply }).ok()?;
        Some(moved)
    }
}

/// Why a new session was refused before any worker traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_sessions` of the vhost: 503.
    Sessions,
    /// `max_sessions_per_ip`: 429.
    SessionsPerIp,
}

#[derive(Default)]
struct VhostCounts {
    live: AtomicUsize,
    per_ip: PerAddress,
}

/// All live sessions of the process; outlives config reloads.
pub(crate) struct Registry {
    cache: Cache<SessionId, SessionHandle>,
    counts: Mutex<HashMap<Arc<str>, Arc<VhostCounts>>>,
    metrics: Arc<Metrics>,
    workers: WorkerPool,
    /// Upgrade: sessions the old process is still handing over; a resume
    /// for one waits for it instead of getting 410 (SPEC 10).
    in_transit: Mutex<HashSet<SessionId>>,
    /// Upgrade, new process: the list of the sessions in transit has not
    /// come yet, so any SessionID may be one of them.
    list_coming: AtomicBool,
    arrived: tokio::sync::Notify,
    /// Upgrade, old process: sessions are leaving for the new one, so a
    /// request that finds none here may be for one that left.
    handing_over: AtomicBool,
}

/// How long a resume waits for a session still being handed over.
const TRANSIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Registry {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Registry {
        Registry {
            cache: Cache::builder().build(),
            counts: Mutex::new(HashMap::new()),
            metrics,
            workers: WorkerPool::default(),
            in_transit: Mutex::new(HashSet::new()),
            list_coming: AtomicBool::new(false),
            arrived: tokio::sync::Notify::new(),
            handing_over: AtomicBool::new(false),
        }
    }
}

/// A session's place in the counters, released when the session ends.
pub(crate) struct SessionSlot {
    counts: Arc<VhostCounts>,
    ip: IpAddr,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.counts.per_ip.release(self.ip);
        self.counts.live.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registry {
    /// Takes a place for a new session of `vhost` opened by `ip`.
    pub(crate) fn admit(
        &self,
        vhost: &Arc<str>,
        ip: IpAddr,
        max_sessions: usize,
        max_per_ip: usize,
    ) -> Result<SessionSlot, Refusal> {
        let ip = limit_key(ip);
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(vhost.clone())
            .or_default()
            .clone();
        if counts.live.fetch_add(1, Ordering::AcqRel) >= max_sessions {
            counts.live.fetch_sub(1, Ordering::AcqRel);
            self.metrics.limit_hit(Limit::Sessions);
            return Err(Refusal::Sessions);
        }
        if !counts.per_ip.try_take(ip, max_per_ip) {
            counts.live.fetch_sub(1, Ordering::AcqRel);
            self.metrics.limit_hit(Limit::SessionsPerIp);
            return Err(Refusal::SessionsPerIp);
        }
        Ok(SessionSlot { counts, ip })
    }

    pub(crate) fn insert(&self, handle: SessionHandle) {
        self.metrics.affinity_entries(1);
        let id = handle.id.clone();
        self.cache.insert(id.clone(), handle);
        let mut in_transit = self
            .in_transit
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !in_transit.is_empty() && in_transit.remove(&id) {
            self.arrived.notify_waiters();
        }
    }

    /// Upgrade, new process, before it tells the old one that it accepts:
    /// until the list of the sessions in transit arrives ([`expect`]), a
    /// resume for any SessionID waits, since the old process may already
    /// have closed that session's TLS client (SPEC 10: a resume for a
    /// session still being handed over waits for it).
    ///
    /// [`expect`]: Registry::expect
    pub(crate) fn list_coming(&self) {
        self.list_coming.store(true, Ordering::SeqCst);
    }

    /// Upgrade: these sessions are on their way here.
    pub(crate) fn expect(&self, ids: impl IntoIterator<Item = SessionId>) {
        self.in_transit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(ids);
        self.list_coming.store(false, Ordering::SeqCst);
        self.arrived.notify_waiters();
    }

    /// Upgrade: nothing more is coming; resumes still waiting get 410.
    pub(crate) fn transit_over(&self) {
        self.in_transit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.list_coming.store(false, Ordering::SeqCst);
        self.arrived.notify_waiters();
    }

    /// Upgrade, old process: sessions leave from now on (`true`), or the
    /// upgrade failed and those not handed over are back (`false`).
    pub(crate) fn set_handing_over(&self, on: bool) {
        self.handing_over.store(on, Ordering::SeqCst);
    }

    /// Whether sessions are leaving for a new process: a request for one
    /// that is not here must then try again there, not get `410`.
    pub(crate) fn handing_over(&self) -> bool {
        self.handing_over.load(Ordering::SeqCst)
    }

    /// [`Registry::find`], waiting (a while) for a session that is still
    /// being handed over from the old process.
    pub(crate) async fn find_or_wait(
        &self,
        id: &SessionId,
        vhost: &VhostScope,
    ) -> Option<SessionHandle> {
        self.wait_for(id, || self.find(id, vhost)).await
    }

    /// [`Registry::find_any`], waiting as [`Registry::find_or_wait`] does
    /// (a push must not miss a session on its way here).
    pub(crate) async fn find_any_or_wait(&self, id: &SessionId) -> Option<SessionHandle> {
        self.wait_for(id, || self.find_any(id)).await
    }

    async fn wait_for(
        &self,
        id: &SessionId,
        find: impl Fn() -> Option<SessionHandle>,
    ) -> Option<SessionHandle> {
        let deadline = tokio::time::Instant::now() + TRANSIT_WAIT;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            // What may still come first, then the index: `expect` fills
            // the set before it clears `list_coming`, and `insert` indexes
            // a session before it takes it out of the set, so a session
            // that arrives meanwhile is found or waited for, never missed.
            let waiting = self.list_coming.load(Ordering::SeqCst)
                || self
                    .in_transit
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(id);
            if let Some(handle) = find() {
                return Some(handle);
            }
            if !waiting || tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }

    /// Every live session's handle (upgrade).
    pub(crate) fn handles(&self) -> Vec<SessionHandle> {
        self.cache.iter().map(|(_, h)| h).collect()
    }

    /// The live session `id` of `vhost`: found by hash, then compared in
    /// constant time with the id as issued.
    pub(crate) fn find(&self, id: &SessionId, vhost: &VhostScope) -> Option<SessionHandle> {
        let handle = self.cache.get(id)?;
        let same_id = handle.id.ct_eq(id);
        let same_vhost = handle.hosts.iter().any(|h| vhost.serves(h));
        (same_id && same_vhost && !handle.mailbox.is_closed()).then_some(handle)
    }

    /// A live session by id alone (the push API is not bound to a vhost),
    /// found by hash, then compared in constant time with the id as issued.
    pub(crate) fn find_any(&self, id: &SessionId) -> Option<SessionHandle> {
        let handle = self.cache.get(id)?;
        (handle.id.ct_eq(id) && !handle.mailbox.is_closed()).then_some(handle)
    }

    /// Called once by each session task as it ends.
    pub(crate) fn remove(&self, id: &SessionId) {
        self.metrics.affinity_entries(-1);
        self.cache.invalidate(id);
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Workers outlive reloads with the sessions pinned to them.
    pub(crate) fn workers(&self) -> &WorkerPool {
        &self.workers
    }

    /// Tells every session to end (SIGTERM, SPEC 8).
    pub(crate) fn shutdown_all(&self) {
        for (_, handle) in self.cache.iter() {
            // A full mailbox belongs to a session flooded with requests;
            // it ends when the process does.
            let _ = handle.mailbox.send(Command::Shutdown);
        }
    }

    /// Live sessions of every vhost.
    pub(crate) fn total_live(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|c| c.live.load(Ordering::Acquire))
            .sum()
    }

    /// Live sessions of a vhost (attached, detached and finishing).
    #[cfg(test)]
    pub(crate) fn live(&self, vhost: &str) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(vhost)
            .map_or(0, |c| c.live.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn scope(metrics: &Metrics, hosts: &[&str]) -> VhostScope {
        VhostScope {
            label: Arc::from(hosts[0]),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            metrics: metrics.vhost(hosts[0]),
        }
    }

    #[test]
    fn admit_counts_exactly_per_vhost_and_per_address() {
        let registry = Registry::new(Arc::new(Metrics::default()));
        let a: Arc<str> = Arc::from("a.test");
        let b: Arc<str> = Arc::from("b.test");
        let one = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let two = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let first = registry.admit(&a, one, 3, 2).expect("first");
        let second = registry.admit(&a, one, 3, 2).expect("second");
        assert_eq!(
            registry.admit(&a, one, 3, 2).err(),
            Some(Refusal::SessionsPerIp)
        );
        let third = registry.admit(&a, two, 3, 2).expect("another address");
        assert_eq!(registry.admit(&a, two, 3, 2).err(), Some(Refusal::Sessions));
        // Another vhost has counts of its own.
        let other = registry.admit(&b, one, 3, 2).expect("another vhost");
        assert_eq!((registry.live("a.test"), registry.total_live()), (3, 4));
        drop(first);
        assert_eq!(registry.live("a.test"), 2);
        let again = registry.admit(&a, one, 3, 2).expect("a place was freed");
        drop((second, third, other, again));
        assert_eq!(registry.total_live(), 0);
        assert!(registry.counts.lock().unwrap()[&a].per_ip.is_empty());
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let registry = Registry::new(Arc::new(Metrics::default()));
        let a: Arc<str> = Arc::from("a.test");
        let ip = |last| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
        let _first = registry.admit(&a, ip(1), 10, 1).expect("first");
        assert_eq!(
            registry.admit(&a, ip(2), 10, 1).err(),
            Some(Refusal::SessionsPerIp)
        );
    }

    #[test]
    fn find_checks_the_vhost_and_that_the_session_is_live() {
        let metrics = Metrics::default();
        let registry = Registry::new(Arc::new(Metrics::default()));
        let id = SessionId::from_random([1; 24]);
        let handle = SessionHandle {
            id: id.clone(),
            hosts: Arc::from(vec!["a.test".to_owned(), "www.a.test".to_owned()]),
            mailbox: Arc::new(Mailbox::default()),
            max_line: 100,
        };
        registry.insert(handle.clone());
        // Found on the vhost that serves its hosts, also renamed by a reload.
        assert!(registry
            .find(&id, &scope(&metrics, &["www.a.test"]))
            .is_some());
        assert!(registry.find(&id, &scope(&metrics, &["b.test"])).is_none());
        assert!(registry.find_any(&id).is_some());
        let unknown = SessionId::from_random([2; 24]);
        assert!(registry.find_any(&unknown).is_none());
        handle.mailbox.close();
        assert!(registry.find(&id, &scope(&metrics, &["a.test"])).is_none());
        assert!(registry.find_any(&id).is_none());
        registry.remove(&id);
        assert!(registry.cache.get(&id).is_none());
    }
}
