//! PEM certificate and key files: what `tether check` verifies and what
//! a TLS listener loads (SPEC 1: unreadable certificate files are errors).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring as provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::sign::CertifiedKey;

/// Which PEM a file must hold.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PemKind {
    Certificate,
    PrivateKey,
}

/// Checks that `path` holds what a TLS listener will need; the error is a
/// sentence for `tether check`.
pub(crate) fn check_pem(path: &Path, kind: PemKind) -> Result<(), String> {
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

/// Checks that the private key `key` belongs to the certificate `cert`
/// (the first of its chain); the error is a sentence for `tether check`.
pub(crate) fn check_pair(cert: &Path, key: &Path) -> Result<(), String> {
    certified_key(cert, key).map(|_| ())
}

/// The chain of `cert` with the signing key of `key`, checked to belong
/// together.
pub(crate) fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_path = key;
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let signing = provider::sign::any_supported_type(&key)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    match certified.keys_match() {
        // A signer that cannot tell its public key is not a mismatch.
        Ok(())
        | Err(tokio_rustls::rustls::Error::InconsistentKeys(
            tokio_rustls::rustls::InconsistentKeys::Unknown,
        )) => Ok(Arc::new(certified)),
        Err(_) => Err(format!(
            "the private key {} does not belong to the certificate {}",
            key_path.display(),
            cert.display()
        )),
    }
}
