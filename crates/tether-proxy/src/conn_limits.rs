//! Client connections counted in all and per address
//! (`max_connections`, `max_connections_per_ip`, SPEC 5 and 7): one place
//! per connection, and one per HTTP/2 stream beyond a connection's first.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::client_addr::{limit_key, PerAddress};

/// Counts client connections in all and per address.
#[derive(Default)]
pub(crate) struct ConnLimits {
    total: AtomicUsize,
    per_ip: PerAddress,
}

/// Which limit turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitHit {
    Connections,
    ConnectionsPerIp,
}

/// Holds one connection's place in the counts until dropped.
pub(crate) struct ConnPermit {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
    /// Counted in `max_connections` too (a connection; an HTTP/2 stream
    /// counts per address only).
    in_total: bool,
}

impl ConnLimits {
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<ConnPermit, LimitHit> {
        let ip = limit_key(ip);
        if self.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitHit::Connections);
        }
        if !self.per_ip.try_take(ip, max_per_ip) {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitHit::ConnectionsPerIp);
        }
        Ok(ConnPermit {
            limits: self.clone(),
            ip,
            in_total: true,
        })
    }

    /// A place for one more concurrent HTTP/2 stream from `ip` beyond its
    /// connection's first: each stream may cost an upstream connection,
    /// so streams count against `max_connections_per_ip` like connections.
    pub(crate) fn try_acquire_stream(
        self: &Arc<Self>,
        ip: IpAddr,
        max_per_ip: usize,
    ) -> Option<ConnPermit> {
        let ip = limit_key(ip);
        if !self.per_ip.try_take(ip, max_per_ip) {
            return None;
        }
        Some(ConnPermit {
            limits: self.clone(),
            ip,
            in_total: false,
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.limits.per_ip.release(self.ip);
        if self.in_total {
            self.limits.total.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic elsewhere while the counts were locked must not turn every
    /// later connection close into a second panic (an abort in `Drop`).
    #[test]
    fn a_poisoned_count_lock_is_still_released() {
        let limits = Arc::new(ConnLimits::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let permit = limits.try_acquire(ip, 10, 10).unwrap();
        limits.per_ip.poison_for_test();
        assert!(limits.per_ip.is_poisoned());
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(permit)));
        assert!(dropped.is_ok(), "dropping a permit panicked");
        assert_eq!(limits.total.load(Ordering::Acquire), 0);
        assert!(limits.try_acquire(ip, 10, 10).is_ok());
    }
}
