//! A TLS client for the harness's plain clients: [`TlsRelay`] listens on a
//! plain loopback port and relays every connection it accepts, byte for
//! byte, over a new TLS connection (rustls, SNI, the test CA) to a TLS
//! listener. So [`RawConn`](crate::RawConn), the session
//! [`Channel`](crate::session::Channel) and [`WsClient`](crate::WsClient)
//! speak to tether's TLS listeners unchanged.
//!
//! Closes are relayed as they come: when tether closes the TLS connection
//! the client gets every byte before it, then FIN (a TLS error: the
//! connection is dropped); when the client closes, the TLS side is shut
//! down. One relayed client connection is one TLS connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

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
    /// SNI `server_name`, trusting the PEM certificates in `ca`.
    pub fn start(target: SocketAddr, server_name: &str, ca: &Path) -> TlsRelay {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .unwrap_or_else(|e| panic!("read {}: {e}", ca.display()))
        {
            roots
                .add(cert.unwrap_or_else(|e| panic!("a certificate in {}: {e}", ca.display())))
                .expect("add a root certificate");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
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
                let Ok((mut client, _)) = listener.accept().await else {
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
                    let Ok(mut tls) = connector.connect(name, tcp).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut tls).await;
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

impl Drop for TlsRelay {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
