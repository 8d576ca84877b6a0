//! Settings that are valid but risky on the public edge: `tether check`
//! prints them and `tether run` logs them, neither refuses them (an
//! operator may have reasons, e.g. an admin listener behind a firewall).

use super::types::Config;

/// A token shorter than this can be guessed by a patient client.
const SHORT_TOKEN: usize = 16;

/// Every warning for `config`; `open_files` is the process's limit on
/// file descriptors (the soft limit after raising it), when known.
pub fn warnings(config: &Config, open_files: Option<u64>) -> Vec<String> {
    let server = &config.server;
    let mut out = Vec::new();
    if !server.admin_listen.ip().is_loopback() {
        out.push(format!(
            "admin_listen {} is not a loopback address: metrics and the push API can be reached from the network; keep it on 127.0.0.1 or behind a firewall",
            server.admin_listen
        ));
    }
    if let Some(token) = &server.admin_token {
        if token.chars().count() < SHORT_TOKEN {
            out.push(format!(
                "admin_token has {} characters; a token under {SHORT_TOKEN} can be guessed, use 32 or more random characters",
                token.chars().count()
            ));
        }
    }
    if config.server.tls_listen.is_empty() {
        for vhost in &config.vhosts {
            if vhost.tls.as_ref().is_some_and(|t| t.redirect_http) {
                out.push(format!(
                    "vhost {} redirects plain HTTP to https (redirect_http), but [server] has no tls_listen: nothing here serves the https side",
                    vhost.label()
                ));
            }
        }
    }
    if let Some(limit) = open_files {
        let needed = descriptors_needed(config);
        if needed > limit {
            out.push(format!(
                "max_connections, max_upstream_connections and max_sessions_per_worker may need {needed} file descriptors, but this process may open {limit}; raise the limit (LimitNOFILE= under systemd) or lower them"
            ));
        }
    }
    out
}

/// Descriptors the configured limits may use at once: every client
/// connection, every upstream connection, every stream-mode worker
/// connection, and a few for listeners and files.
pub fn descriptors_needed(config: &Config) -> u64 {
    let server = &config.server;
    let mut upstreams: Vec<&str> = Vec::new();
    let mut sessions: u64 = 0;
    for vhost in &config.vhosts {
        upstreams.push(&vhost.origin.as_written);
        if let Some(p) = &vhost.persistent {
            for w in &p.workers {
                upstreams.push(&w.as_written);
            }
            let per_vhost =
                (p.max_sessions_per_worker as u64).saturating_mul(p.workers.len() as u64);
            sessions = sessions.saturating_add(per_vhost.min(p.max_sessions as u64));
        }
    }
    upstreams.sort_unstable();
    upstreams.dedup();
    (server.max_connections as u64)
        .saturating_add(
            (server.max_upstream_connections as u64).saturating_mul(upstreams.len() as u64),
        )
        .saturating_add(sessions)
        .saturating_add(64)
}
