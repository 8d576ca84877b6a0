//! Client connections counted in all and per address
//! (`max_connections`, `max_connections_per_ip`, SPEC 5 and 7): one place
//! per connection, and one per HTTP/2 stream beyond a connection's first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Counts client connections in all and per address.
#[derive(Default)]
pub(crate) struct ConnLimits {
    total: AtomicUsize,
    // A std mutex: touched once per accept and once per close, never held
    // across an await.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
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
        let ip = crate::client_addr::limit_key(ip);
        if self.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitHit::Connections);
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            drop(per_ip);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitHit::ConnectionsPerIp);
        }
        *n += 1;
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
        let ip = crate::client_addr::limit_key(ip);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            return None;
        }
        *n += 1;
        Some(ConnPermit {
            limits: self.clone(),
            ip,
            in_total: false,
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut per_ip = self
            .limits
            .per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        drop(per_ip);
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
        let poisoner = limits.clone();
        let _ = std::thread::spawn(move || {
            let _held = poisoner.per_ip.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(limits.per_ip.is_poisoned());
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(permit)));
        assert!(dropped.is_ok(), "dropping a permit panicked");
        assert_eq!(limits.total.load(Ordering::Acquire), 0);
        assert!(limits.try_acquire(ip, 10, 10).is_ok());
    }
}
