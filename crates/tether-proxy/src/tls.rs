//! TLS for `tls_listen` (SPEC 1, SPEC 5): rustls with the certificate of
//! each `[vhost.tls]` chosen by SNI, and ALPN offering `h2` then
//! `http/1.1`. Built once per config load; a reload changes certificates
//! for new connections.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring as provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::ServerConfig;

use crate::config::{Config, TlsConfig};

/// Which PEM a file must hold.
#[derive(Debug, Clone, Copy)]
pub enum PemKind {
    Certificate,
    PrivateKey,
}

/// Checks that `path` holds what a TLS listener will need; the error is a
/// sentence for `tether check`.
pub fn check_pem(path: &Path, kind: PemKind) -> Result<(), String> {
    match kind {
        PemKind::Certificate => match CertificateDer::pem_file_iter(path) {
            Ok(iter) => {
                let certs: Result<Vec<_>, _> = iter.collect();
                match certs {
                    Ok(c) if !c.is_empty() => Ok(()),
                    Ok(_) => Err("it holds no PEM certificate".into()),
                    Err(e) => Err(format!("it is not a PEM certificate file ({e})")),
                }
            }
            Err(e) => Err(format!("it cannot be read as PEM ({e})")),
        },
        PemKind::PrivateKey => PrivateKeyDer::from_pem_file(path)
            .map(|_| ())
            .map_err(|e| format!("it holds no usable PEM private key ({e})")),
    }
}

/// Checks that the private key of `tls` belongs to its certificate (the
/// first of the chain); the error is a sentence for `tether check`.
pub fn check_pair(tls: &TlsConfig) -> Result<(), String> {
    certified_key(tls).map(|_| ())
}

fn certified_key(tls: &TlsConfig) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|i| i.collect())
        .map_err(|e| format!("{}: {e}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .map_err(|e| format!("{}: {e}", tls.key.display()))?;
    let signing = provider::sign::any_supported_type(&key)
        .map_err(|e| format!("{}: {e}", tls.key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        // A signer that cannot tell its public key is not a mismatch.
        Ok(())
        | Err(tokio_rustls::rustls::Error::InconsistentKeys(
            tokio_rustls::rustls::InconsistentKeys::Unknown,
        )) => Ok(Arc::new(certified)),
        Err(_) => Err(format!(
            "the private key {} does not belong to the certificate {}",
            tls.key.display(),
            tls.cert.display()
        )),
    }
}

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
pub fn server_config(config: &Config) -> Result<Option<Arc<ServerConfig>>, String> {
    let mut resolver = BySni {
        by_host: HashMap::new(),
        fallback: None,
    };
    for vhost in &config.vhosts {
        let Some(tls) = &vhost.tls else { continue };
        let key = certified_key(tls)?;
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
