//! Finds the vhost of a request and says whether it is plain or a
//! persistent candidate (SPEC 2, SPEC 5).
//!
//! The table is compiled once per config load into an `Arc<Routes>`;
//! requests carry an `Arc<Vhost>`, so a reload never changes the vhost of a
//! request (or a session) already under way.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, VhostConfig};
use crate::metrics::{Metrics, UpstreamErrors, VhostMetrics, WorkerSample};
use crate::session::balance::WorkerPool;
use crate::session::{PersistentRoute, VhostScope};

/// One virtual host, as compiled from its config.
#[derive(Debug)]
pub(crate) struct Vhost {
    pub config: VhostConfig,
    /// Label, hosts and metric families, shared with the sessions the
    /// vhost opens.
    pub scope: Arc<VhostScope>,
    /// Present when `[vhost.persistent]` is enabled.
    pub persistent: Option<PersistentRoute>,
    /// Counts the origin's failures with the vhost's.
    pub origin_errors: UpstreamErrors,
}

impl Vhost {
    pub(crate) fn label(&self) -> &str {
        self.config.label()
    }

    /// Whether `host` (lower-case, no port) names this vhost.
    pub(crate) fn serves(&self, host: &str) -> bool {
        self.scope.serves(host)
    }

    pub(crate) fn metrics(&self) -> &Arc<VhostMetrics> {
        &self.scope.metrics
    }
}

/// The vhost table of one config load.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    by_host: HashMap<String, Arc<Vhost>>,
    fallback: Option<Arc<Vhost>>,
    all: Vec<Arc<Vhost>>,
}

impl Routes {
    pub(crate) fn new(config: &Config, metrics: &Metrics, workers: &WorkerPool) -> Routes {
        let mut routes = Routes::default();
        for vc in &config.vhosts {
            let vhost_metrics = metrics.vhost(vc.label());
            let vhost = Arc::new(Vhost {
                config: vc.clone(),
                persistent: vc
                    .persistent
                    .as_ref()
                    .map(|p| PersistentRoute::new(vc.label(), p, workers, &vhost_metrics)),
                origin_errors: vhost_metrics.upstream(&vc.origin.as_written),
                scope: Arc::new(VhostScope {
                    label: Arc::from(vc.label()),
                    hosts: vc.hosts.clone().into(),
                    metrics: vhost_metrics,
                }),
            });
            routes.all.push(vhost.clone());
            for host in &vc.hosts {
                if host == "*" {
                    routes.fallback = Some(vhost.clone());
                } else {
                    routes.by_host.insert(host.clone(), vhost.clone());
                }
            }
        }
        routes
    }

    /// The gauges of every worker, for a scrape.
    pub(crate) fn worker_samples(&self) -> Vec<WorkerSample> {
        let mut samples = Vec::new();
        for vhost in &self.all {
            let Some(route) = &vhost.persistent else {
                continue;
            };
            for w in route.workers.iter() {
                samples.push(WorkerSample {
                    vhost: vhost.label().to_owned(),
                    worker: w.url.as_written.clone(),
                    sessions: w.sessions(),
                    up: w.is_up(),
                });
            }
        }
        samples
    }

    /// The vhost for a `Host` value (any case, port ignored).
    pub(crate) fn find(&self, host: Option<&str>) -> Option<&Arc<Vhost>> {
        // `a.test.` is the same name as `a.test` (SPEC 5).
        host.map(|h| {
            let h = host_without_port(h);
            h.strip_suffix('.').filter(|h| !h.is_empty()).unwrap_or(h)
        })
        .and_then(|h| {
            if h.bytes().any(|b| b.is_ascii_uppercase()) {
                self.by_host.get(&h.to_ascii_lowercase())
            } else {
                self.by_host.get(h)
            }
        })
        .or(self.fallback.as_ref())
    }
}

/// `example.test:8080` -> `example.test`; `[::1]:80` -> `[::1]`.
pub(crate) fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(colon) if host[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..colon],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_ignored() {
        assert_eq!(host_without_port("a.test:8080"), "a.test");
        assert_eq!(host_without_port("a.test"), "a.test");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
