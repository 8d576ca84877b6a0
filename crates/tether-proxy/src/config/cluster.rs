//! `[cluster]` (SPEC 11): this instance's node name, the NATS servers, the
//! peer listener and the shared peer secret. Absent: a single instance.

use std::net::SocketAddr;

use super::fields::Section;
use super::parse::{Checker, Listener};
use super::types::ClusterConfig;
use super::values;

pub(super) const CLUSTER_KEYS: &[&str] = &[
    "node",
    "nats",
    "peer_listen",
    "peer_advertise",
    "peer_token",
];

/// The longest node name: it rides at the end of every SessionID, which
/// may not exceed 64 characters (32 random + 16 + room to spare).
pub const MAX_NODE_LEN: usize = 16;

impl Checker<'_> {
    pub(super) fn cluster(
        &mut self,
        sec: Section<'_>,
        listeners: &mut Vec<Listener>,
    ) -> Option<ClusterConfig> {
        self.unknown_keys(sec, CLUSTER_KEYS);
        let d = ClusterConfig::default();
        let mut complete = true;

        let node = match sec.field("node") {
            Some(f) => match self.string(&f, "a name of 1 to 16 characters from a-z and 0-9") {
                Some(name) if valid_node(name) => Some(name.to_string()),
                Some(name) => {
                    self.error(
                        f.at,
                        format!(
                            "node \"{name}\" must be 1 to {MAX_NODE_LEN} characters from a-z and 0-9 (it ends every SessionID this instance mints)"
                        ),
                    );
                    None
                }
                None => None,
            },
            None => {
                self.error(
                    sec.at,
                    "[cluster] needs node = \"...\": this instance's name, 1 to 16 characters from a-z and 0-9, unique in the cluster",
                );
                None
            }
        };
        complete &= node.is_some();

        let nats = match sec.field("nats") {
            Some(f) => {
                match self.string_list(&f, "a list of URLs like [\"nats://127.0.0.1:4222\"]") {
                    Some(list) if list.is_empty() => {
                        self.error(
                        f.at,
                        "nats is empty; list at least one NATS server, like [\"nats://127.0.0.1:4222\"]",
                    );
                        None
                    }
                    Some(list) => {
                        let mut out = Vec::new();
                        for item in list {
                            match nats_url(item.value) {
                                Ok(()) => out.push(item.value.to_string()),
                                Err(e) => {
                                    self.error(item.at, format!("nats: {e}"));
                                    complete = false;
                                }
                            }
                        }
                        Some(out)
                    }
                    None => None,
                }
            }
            None => Some(d.nats.clone()),
        };
        complete &= nats.is_some();

        let peer_listen = match sec.field("peer_listen") {
            Some(f) => match self.string(&f, "an address like \"10.0.0.1:7401\"") {
                Some(s) => match values::socket_addr(s) {
                    Ok(addr) => {
                        listeners.push(Listener {
                            addr,
                            key: "peer_listen",
                            at: Some(f.at),
                        });
                        Some((addr, f.at))
                    }
                    Err(e) => {
                        self.error(f.at, format!("peer_listen: {e}"));
                        None
                    }
                },
                None => None,
            },
            None => {
                listeners.push(Listener {
                    addr: d.peer_listen,
                    key: "peer_listen",
                    at: None,
                });
                Some((d.peer_listen, sec.at))
            }
        };
        complete &= peer_listen.is_some();

        let advertise = match sec.field("peer_advertise") {
            Some(f) => match self.string(&f, "an address like \"10.0.0.1:7401\"") {
                Some("") => peer_listen.and_then(|(addr, at)| self.advertised(addr, at)),
                Some(s) => match values::socket_addr(s) {
                    Ok(addr) => self.advertised(addr, f.at),
                    Err(e) => {
                        self.error(f.at, format!("peer_advertise: {e}"));
                        None
                    }
                },
                None => None,
            },
            None => peer_listen.and_then(|(addr, at)| self.advertised(addr, at)),
        };
        complete &= advertise.is_some();

        let token = match sec.field("peer_token") {
            Some(f) => match self.string(&f, "a string") {
                Some(t) if t.trim().is_empty() => {
                    self.error(
                        f.at,
                        "peer_token is empty; set the same long random secret on every instance of the cluster",
                    );
                    None
                }
                Some(t) => Some(t.to_string()),
                None => None,
            },
            None => {
                self.error(
                    sec.at,
                    "[cluster] needs peer_token = \"...\": the secret every instance of the cluster shares",
                );
                None
            }
        };
        complete &= token.is_some();

        if !complete {
            return None;
        }
        Some(ClusterConfig {
            node: node?,
            nats: nats?,
            peer_listen: peer_listen?.0,
            peer_advertise: advertise?,
            peer_token: token?,
        })
    }

    /// The address the other instances dial: a concrete one. Errors point
    /// at `at` (peer_advertise, or peer_listen when it stands for it).
    fn advertised(&mut self, addr: SocketAddr, at: usize) -> Option<SocketAddr> {
        if addr.ip().is_unspecified() || addr.port() == 0 {
            self.error(
                at,
                format!(
                    "the other instances cannot dial {addr}: set peer_advertise to this instance's address on the private network, like \"10.0.0.1:7401\""
                ),
            );
            return None;
        }
        Some(addr)
    }
}

/// Whether `name` is a node name of SPEC 11: 1 to 16 of `[a-z0-9]`.
pub fn valid_node(name: &str) -> bool {
    (1..=MAX_NODE_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// `nats://host:port` or `tls://host:port` (the port may be left out).
fn nats_url(text: &str) -> Result<(), String> {
    let lower = text.to_ascii_lowercase();
    let rest = ["nats://", "tls://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme))
        .ok_or_else(|| {
            format!("\"{text}\" is not a NATS URL; write one like \"nats://127.0.0.1:4222\"")
        })?;
    let authority = rest.rsplit('@').next().unwrap_or(rest);
    if authority.is_empty() || authority.contains('/') {
        return Err(format!(
            "\"{text}\" needs a host and port and nothing after them, like \"nats://127.0.0.1:4222\""
        ));
    }
    // What the NATS client will be given must be what it accepts.
    text.parse::<async_nats::ServerAddr>()
        .map(|_| ())
        .map_err(|e| format!("\"{text}\" is not a NATS server address: {e}"))
}
