//! mTLS on the RPC port (docs/cluster.md §2): with `[cluster.tls]`, both ends of every
//! connection between members present a certificate that chains to the cluster's CA, and a
//! client checks that the server's certificate names the address it dialled (an IP or DNS
//! subject alternative name matching the host of `rpc_addr`). [`Tls`] holds both sides'
//! settings; [`TlsListener`] hands the RPC router only connections whose handshake succeeded.
//! ring is the crypto provider (already compiled for object storage's HTTPS).

use crate::ClusterError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// How long a connecting peer has to finish its handshake (a member's client gives up on
/// connecting after 2 s).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Handshakes run at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 64;

/// A member's mTLS settings: what it presents and which peers it trusts.
#[derive(Clone)]
pub struct Tls {
    server: Arc<rustls::ServerConfig>,
    client: rustls::ClientConfig,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

fn refused(what: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Tls(format!("{what}: {e}"))
}

impl Tls {
    /// Reads the CA certificate(s), this node's certificate chain and its private key from PEM
    /// files.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, ClusterError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| refused(&p.display().to_string(), e));
        Self::from_pem(&read(ca)?, &read(cert)?, &read(key)?)
    }

    /// [`Self::from_files`] from the files' contents.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Self, ClusterError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for found in CertificateDer::pem_slice_iter(ca) {
            let der = found.map_err(|e| refused("the CA certificate", e))?;
            roots
                .add(der)
                .map_err(|e| refused("the CA certificate", e))?;
        }
        if roots.is_empty() {
            return Err(refused("the CA certificate", "no certificate in the file"));
        }
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| refused("the node certificate", e))?;
        if chain.is_empty() {
            return Err(refused(
                "the node certificate",
                "no certificate in the file",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| refused("the node key", e))?;
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| refused("the CA certificate", e))?;
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| refused("TLS versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| refused("the node certificate and key", e))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| refused("TLS versions", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| refused("the node certificate and key", e))?;
        Ok(Self {
            server: Arc::new(server),
            client,
        })
    }

    /// An HTTP client for peers that presents this node's certificate and trusts only the CA.
    pub(crate) fn client(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        builder.use_preconfigured_tls(self.client.clone())
    }
}

/// Accepts TCP connections and hands on those whose TLS handshake (a certificate from the
/// cluster's CA included) succeeds: at most [`MAX_HANDSHAKES`] run at once, each within
/// [`HANDSHAKE_TIMEOUT`], so connections that never finish one cannot pile up. The listener
/// and the handshakes in flight end with the server that accepts from it.
pub(crate) struct TlsListener {
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshakes: tokio::task::JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Serves `listener` with `tls`.
    pub(crate) fn new(listener: TcpListener, tls: &Tls) -> Self {
        Self {
            listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.server)),
            handshakes: tokio::task::JoinSet::new(),
        }
    }

    fn start_handshake(&mut self, tcp: TcpStream, addr: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let acceptor = self.acceptor.clone();
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => Some((stream, addr)),
                Ok(Err(e)) => {
                    tracing::warn!("RPC connection from {addr} refused: {e}");
                    None
                }
                Err(_) => {
                    tracing::warn!("RPC connection from {addr}: handshake timed out");
                    None
                }
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let room = self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                accepted = self.listener.accept(), if room => match accepted {
                    Ok((tcp, addr)) => self.start_handshake(tcp, addr),
                    // Out of file descriptors and the like: wait rather than spin.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA's certificate, and two member certificates it signs, each with its key: one
    /// naming `host`, one naming 127.0.0.1.
    fn signed(host: &str) -> (String, (String, String), (String, String)) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let member = |name: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![name.to_string()])
                .unwrap()
                .signed_by(&key, &ca, &ca_key)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        (ca.pem(), member(host), member("127.0.0.1"))
    }

    fn tls(ca: &str, (cert, key): &(String, String)) -> Tls {
        Tls::from_pem(ca.as_bytes(), cert.as_bytes(), key.as_bytes()).unwrap()
    }

    /// Answers `GET /` over `server`'s TLS on a loopback port; its address.
    async fn serve(server: &Tls) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "member" }));
        let listener = TlsListener::new(listener, server);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    /// A member checks that a peer's certificate names the address it dialled: a certificate
    /// of the cluster's CA issued for another host is refused.
    #[tokio::test]
    async fn a_peer_certificate_for_another_host_is_refused() {
        let (ca, elsewhere, local) = signed("10.9.9.9");
        let member = tls(&ca, &local);
        let http = member.client(reqwest::Client::builder()).build().unwrap();
        let get = |addr: SocketAddr| {
            let http = http.clone();
            async move { http.get(format!("https://{addr}/")).send().await }
        };
        // Control: a peer whose certificate names 127.0.0.1 answers.
        let right = serve(&tls(&ca, &local)).await;
        assert_eq!(get(right).await.unwrap().text().await.unwrap(), "member");
        // The same CA, another host's certificate: refused in the handshake.
        let wrong = serve(&tls(&ca, &elsewhere)).await;
        let refused = get(wrong).await.unwrap_err();
        let chain = format!("{refused:?}");
        assert!(
            chain.contains("NotValidForName") || chain.contains("not valid for"),
            "{chain}"
        );
    }
}
