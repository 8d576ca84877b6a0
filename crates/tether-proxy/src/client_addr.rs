//! The key per-address limits count by (`max_connections_per_ip`,
//! `max_sessions_per_ip`): one IPv6 client usually holds a whole /64 and
//! can pick any address in it, so IPv6 addresses count by their /64; an
//! IPv4-mapped IPv6 address counts as the IPv4 address it is.

use std::net::{IpAddr, Ipv6Addr};

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
