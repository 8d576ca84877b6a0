//! TLS for `tls_listen` (SPEC 1, SPEC 5): rustls with the certificate of
//! each `[vhost.tls]` chosen by SNI, and ALPN offering `h2` then
//! `http/1.1`. Built once per config load; a reload changes certificates
//! for new connections.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring as provider;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;

use crate::config::Config;
use crate::pem;

/// Picks a vhost's certificate by the client's SNI name; without a name
/// (or an unknown one) the `"*"` vhost's, else the first TLS vhost's.
#[derive(Debug)]
struct BySni {
    by_host: HashMap<String, Arc<CertifiedKey>>,
    fallback: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|name| self.by_host.get(&name.to_ascii_lowercase()))
            .or(self.fallback.as_ref())
            .cloned()
    }
}

/// The TLS server configuration of a config load, or `None` when no vhost
/// has `[vhost.tls]`.
pub(crate) fn server_config(config: &Config) -> Result<Option<Arc<ServerConfig>>, String> {
    let mut resolver = BySni {
        by_host: HashMap::new(),
        fallback: None,
    };
    for vhost in &config.vhosts {
        let Some(tls) = &vhost.tls else { continue };
        let key = pem::certified_key(&tls.cert, &tls.key)?;
        for host in &vhost.hosts {
            if host == "*" {
                resolver.fallback = Some(key.clone());
            } else {
                resolver.by_host.insert(host.clone(), key.clone());
            }
        }
        if resolver.fallback.is_none() {
            resolver.fallback = Some(key.clone());
        }
    }
    if resolver.by_host.is_empty() && resolver.fallback.is_none() {
        return Ok(None);
    }
    let mut server = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(server)))
}
