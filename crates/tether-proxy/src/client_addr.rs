//! Per-address limits (`max_connections_per_ip`, `max_sessions_per_ip`):
//! the key they count by, and the count itself. One IPv6 client usually
//! holds a whole /64 and can pick any address in it, so IPv6 addresses
//! count by their /64; an IPv4-mapped IPv6 address counts as the IPv4
//! address it is.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};

/// Places taken per address key; an address with none left has no entry,
/// so the map holds only addresses with something open.
#[derive(Default)]
pub(crate) struct PerAddress {
    // A std mutex: touched once per open and once per close, never held
    // across an await; a poisoned lock still counts (a count has no
    // invariant a panic could break), so `Drop`s that release never panic.
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    /// Takes a place for `ip` (already a [`limit_key`]) if it has fewer
    /// than `max`.
    pub(crate) fn try_take(&self, ip: IpAddr, max: usize) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            if *n == 0 {
                counts.remove(&ip);
            }
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back a place taken by [`PerAddress::try_take`].
    pub(crate) fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn poison_for_test(&self) {
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _held = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
                panic!("poison the lock");
            })
            .join()
        });
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    #[cfg(test)]
    pub(crate) fn is_poisoned(&self) -> bool {
        self.counts.is_poisoned()
    }
}

pub(crate) fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_and_given_back() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let counts = PerAddress::default();
        assert!(counts.try_take(a, 2) && counts.try_take(a, 2));
        assert!(!counts.try_take(a, 2));
        counts.release(a);
        assert!(counts.try_take(a, 2));
        assert!(!counts.try_take(a, 0));
        counts.release(a);
        counts.release(a);
        assert!(counts.counts.lock().unwrap().is_empty());
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limit_key(a), limit_key(b));
        assert_ne!(limit_key(a), limit_key(c));
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(limit_key(v4), v4);
        assert_eq!(limit_key("::ffff:192.0.2.7".parse().unwrap()), v4);
        assert_eq!(
            limit_key("::1".parse().unwrap()),
            "::".parse::<IpAddr>().unwrap()
        );
    }
}
