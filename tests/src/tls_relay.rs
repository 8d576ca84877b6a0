//! A TLS client for the harness's plain clients: [`TlsRelay`] listens on a
//! plain loopback port and relays every connection it accepts, byte for
//! byte, over a new TLS connection (rustls, SNI, a pinned certificate) to a TLS
//! listener. So [`RawConn`](crate::RawConn), the session
//! [`Channel`](crate::session::Channel) and [`WsClient`](crate::WsClient)
//! speak to tether's TLS listeners unchanged.
//!
//! Closes are relayed as they come, each direction on its own: when tether
//! closes the TLS connection (with or without `close_notify`) the client
//! gets every byte before it, then FIN; when the client closes, the TLS
//! side is shut down. One relayed client connection is one TLS connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

/// Path of a test certificate or key in `crates/tether-proxy/testdata/`
/// (`cert.pem`/`key.pem` are valid for `localhost`, `a.test`, `b.test`,
/// `example.test` and 127.0.0.1; see its README).
pub fn testdata(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/tether-proxy/testdata")
        .join(name)
}

/// A running relay; stops on `Drop` (its connections are closed).
pub struct TlsRelay {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsRelay {
    /// Relays `127.0.0.1:<free port>` to the TLS listener `target`, with
    /// SNI `server_name`, accepting only a certificate found in the PEM
    /// file `cert` (the test certificates are self-signed CAs, which
    /// WebPKI refuses as server certificates: they are pinned instead).
    pub fn start(target: SocketAddr, server_name: &str, cert: &Path) -> TlsRelay {
        let pinned: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap_or_else(|e| panic!("read {}: {e}", cert.display()))
            .map(|c| c.unwrap_or_else(|e| panic!("a certificate in {}: {e}", cert.display())))
            .collect();
        assert!(!pinned.is_empty(), "no certificate in {}", cert.display());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pinned, provider }))
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from(server_name.to_string())
            .unwrap_or_else(|e| panic!("server name {server_name}: {e}"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tls-relay")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let connector = connector.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    let Ok(tcp) = tokio::net::TcpStream::connect(target).await else {
                        return; // the client sees its connection closed
                    };
                    let _ = tcp.set_nodelay(true);
                    let Ok(tls) = connector.connect(name, tcp).await else {
                        return;
                    };
                    relay(client, tls).await;
                });
            }
        });
        TlsRelay {
            addr,
            runtime: Some(runtime),
        }
    }

    /// The plain address that clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Copies each direction on its own until its end: what tether sent before
/// it closed reaches the client whole even when the client's own writes
/// already fail (a real TLS client keeps what it has received), then the
/// client gets FIN.
async fn relay(
    client: tokio::net::TcpStream,
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    use tokio::io::AsyncWriteExt;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut tls_read, mut tls_write) = tokio::io::split(tls);
    let down = async {
        let _ = tokio::io::copy(&mut tls_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    let up = async {
        let _ = tokio::io::copy(&mut client_read, &mut tls_write).await;
        let _ = tls_write.shutdown().await;
    };
    tokio::join!(down, up);
}

/// Accepts exactly the pinned certificates; handshake signatures are
/// verified as usual.
#[derive(Debug)]
struct Pinned {
    pinned: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
