//! Worker choice and worker health (SPEC 2 step 5, SPEC 7).
//!
//! New sessions go to the worker with the fewest active sessions among
//! those that are up; ties are broken by a rendezvous hash of the SessionID,
//! so the choice is stable for a given id and spreads evenly. A worker is
//! down after a refused or timed-out connect and up again after a TCP
//! connect probe succeeds (every 5 s while down).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tether_wire::SessionId;

use crate::config::OriginUrl;
use crate::metrics::{UpstreamErrors, VhostMetrics};

const PROBE_EVERY: Duration = Duration::from_secs(5);

/// One worker of one vhost, shared by the sessions pinned to it.
#[derive(Debug)]
pub(crate) struct Worker {
    pub url: OriginUrl,
    /// Counts this worker's failures with its vhost's.
    pub errors: UpstreamErrors,
    up: AtomicBool,
    probing: AtomicBool,
    sessions: AtomicUsize,
}

impl Worker {
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub(crate) fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Acquire)
    }

    /// Marks the worker down after a failed connect and starts the probe.
    pub(crate) fn mark_down(self: &Arc<Self>) {
        self.up.store(false, Ordering::Release);
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(worker = %self.url.as_written, "worker down");
        let worker = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                if Arc::strong_count(&worker) == 1 {
                    // Removed by a reload and no session left on it.
                    return;
                }
                let target = (worker.url.host.as_str(), worker.url.port);
                let probe =
                    tokio::time::timeout(PROBE_EVERY, tokio::net::TcpStream::connect(target)).await;
                if matches!(probe, Ok(Ok(_))) {
                    worker.up.store(true, Ordering::Release);
                    worker.probing.store(false, Ordering::Release);
                    tracing::info!(worker = %worker.url.as_written, "worker up");
                    return;
                }
            }
        });
    }

    /// Counts one more session pinned here until the guard drops: a
    /// session moved in on upgrade, which its worker took already.
    pub(crate) fn pin(self: &Arc<Self>) -> WorkerPin {
        self.sessions.fetch_add(1, Ordering::AcqRel);
        WorkerPin(self.clone())
    }
}

/// A session's hold on its worker.
#[derive(Debug)]
pub(crate) struct WorkerPin(pub(crate) Arc<Worker>);

impl Drop for WorkerPin {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The workers of one vhost.
#[derive(Debug)]
pub(crate) struct Workers {
    list: Vec<Arc<Worker>>,
}

/// Every worker the process knows, by vhost label and URL, so that a
/// reload keeps a worker's health and session count (SPEC 7, SPEC 8).
#[derive(Default)]
pub(crate) struct WorkerPool {
    // Touched at config load only.
    known: Mutex<HashMap<(String, String), Weak<Worker>>>,
}

impl WorkerPool {
    pub(crate) fn get(
        &self,
        vhost: &str,
        url: &OriginUrl,
        metrics: &Arc<VhostMetrics>,
    ) -> Arc<Worker> {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.retain(|_, w| w.strong_count() > 0);
        let key = (vhost.to_owned(), url.as_written.clone());
        if let Some(w) = known.get(&key).and_then(Weak::upgrade) {
            return w;
        }
        let w = Arc::new(Worker {
            url: url.clone(),
            errors: metrics.upstream(&url.as_written),
            up: AtomicBool::new(true),
            probing: AtomicBool::new(false),
            sessions: AtomicUsize::new(0),
        });
        known.insert(key, Arc::downgrade(&w));
        w
    }
}

impl Workers {
    pub(crate) fn new(
        vhost: &str,
        urls: &[OriginUrl],
        pool: &WorkerPool,
        metrics: &Arc<VhostMetrics>,
    ) -> Workers {
        Workers {
            list: urls
                .iter()
                .map(|url| pool.get(vhost, url, metrics))
                .collect(),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Worker>> {
        self.list.iter()
    }

    /// The worker for a new session, or `None` when none is up.
    pub(crate) fn pick(&self, id: &SessionId) -> Option<Arc<Worker>> {
        self.list
            .iter()
            .filter(|w| w.is_up())
            .min_by_key(|w| (w.sessions(), std::cmp::Reverse(rendezvous(id, &w.url))))
            .cloned()
    }
}

/// Why no worker could take a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoWorker {
    /// Every worker is down: 502 (SPEC 2 step 5).
    Down,
    /// Every worker that is up holds `max_sessions_per_worker`: 503. A
    /// full worker is healthy and is never marked down for it.
    Full,
}

impl Workers {
    /// Picks the worker for a new session as [`Workers::pick`] does and
    /// takes its place there at once, so that concurrent opens never pin
    /// more than `max_per_worker` sessions to one worker.
    pub(crate) fn claim(
        &self,
        id: &SessionId,
        max_per_worker: usize,
    ) -> Result<WorkerPin, NoWorker> {
        let mut up: Vec<&Arc<Worker>> = self.list.iter().filter(|w| w.is_up()).collect();
        if up.is_empty() {
            return Err(NoWorker::Down);
        }
        up.sort_by_key(|w| (w.sessions(), std::cmp::Reverse(rendezvous(id, &w.url))));
        for w in up {
            if w.sessions.fetch_add(1, Ordering::AcqRel) < max_per_worker {
                return Ok(WorkerPin(w.clone()));
            }
            w.sessions.fetch_sub(1, Ordering::AcqRel);
        }
        Err(NoWorker::Full)
    }
}

fn rendezvous(id: &SessionId, url: &OriginUrl) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.as_str().hash(&mut h);
    url.as_written.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(port: u16) -> OriginUrl {
        OriginUrl {
            as_written: format!("http://127.0.0.1:{port}"),
            authority: format!("127.0.0.1:{port}"),
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn id(n: u8) -> SessionId {
        SessionId::from_random([n; 24])
    }

    fn workers(urls: &[OriginUrl]) -> Workers {
        Workers::new("v", urls, &WorkerPool::default(), &Arc::default())
    }

    #[test]
    fn a_reload_keeps_worker_state() {
        let pool = WorkerPool::default();
        let metrics = Arc::default();
        let before = Workers::new("v", &[url(1)], &pool, &metrics);
        let _pin = before.list[0].pin();
        let after = Workers::new("v", &[url(1), url(2)], &pool, &metrics);
        assert!(Arc::ptr_eq(&before.list[0], &after.list[0]));
        assert_eq!(after.list[0].sessions(), 1);
    }

    #[test]
    fn least_sessions_first_then_stable_hash() {
        let workers = workers(&[url(1), url(2)]);
        let first = workers.pick(&id(1)).unwrap();
        assert!(Arc::ptr_eq(&first, &workers.pick(&id(1)).unwrap()));
        let _pin = first.pin();
        let second = workers.pick(&id(1)).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn ties_spread_over_workers() {
        let workers = workers(&[url(1), url(2), url(3)]);
        let mut counts = [0usize; 3];
        for n in 0..=255u8 {
            let w = workers.pick(&id(n)).unwrap();
            counts[(w.url.port - 1) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 40), "{counts:?}");
    }

    #[tokio::test]
    async fn full_workers_are_skipped_and_not_down() {
        let workers = workers(&[url(1), url(2)]);
        let a = workers.claim(&id(1), 1).unwrap();
        let b = workers.claim(&id(2), 1).unwrap();
        assert!(!Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(workers.claim(&id(3), 1).unwrap_err(), NoWorker::Full);
        assert!(workers.iter().all(|w| w.is_up() && w.sessions() == 1));
        drop(a);
        assert!(workers.claim(&id(3), 1).is_ok());
        workers.list[0].mark_down();
        workers.list[1].mark_down();
        assert_eq!(workers.claim(&id(4), 9).unwrap_err(), NoWorker::Down);
    }

    #[tokio::test]
    async fn down_workers_are_skipped() {
        let workers = workers(&[url(1), url(2)]);
        let w = workers.pick(&id(7)).unwrap();
        w.mark_down();
        let other = workers.pick(&id(7)).unwrap();
        assert!(!Arc::ptr_eq(&w, &other));
        other.mark_down();
        assert!(workers.pick(&id(7)).is_none());
    }
}
