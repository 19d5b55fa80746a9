//! The listener: HTTP/1.1 with upgrades (WebSockets), over TLS when a certificate is configured.
//! Each connection's peer address travels with its requests for rate limits and `X-Forwarded-For`,
//! and so do the upstream connections it holds for the preview proxy ([`Held`]), which its task
//! drives. On shutdown the listener stops accepting and open connections finish.

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use crate::gateway::App;
use crate::gateway::upstream::Held;

/// Longest a client may take to finish the TLS handshake: a connection that never does would
/// otherwise hold its socket and task for ever (the HTTP header timeout starts only after it).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A rustls server configuration from PEM files (the certificate chain, then the key).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let read_error = |path: &Path, e: &dyn std::fmt::Display| TlsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read_error(cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_error(cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read_error(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections finish
/// for up to `drain`. Each connection's requests carry its [`Held`] upstream connections, which
/// its task drives.
pub async fn serve(
    listener: TcpListener,
    app: App,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    let builder = Arc::new(builder.http1_only());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    debug!(%error, "accept failed");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let held = Held::new(app.gateway().upstreams.clone());
        let service = {
            let (app, held) = (app.clone(), held.clone());
            hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let answer = app.clone().handle(request, peer, Some(held.clone()));
                async move { Ok::<_, Infallible>(answer.await) }
            })
        };
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = async {
                let Some(acceptor) = tls else {
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    return watcher.watch(connection.into_owned()).await;
                };
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                    Ok(Err(error)) => Err(format!("TLS handshake failed: {error}").into()),
                    Err(_) => Err("TLS handshake timed out".into()),
                }
            };
            // The connection's upstream connections are polled in this same task, beside it.
            let result = tokio::select! {
                biased;
                result = served => result,
                never = held.drive() => match never {},
            };
            held.release();
            if let Err(error) = result {
                debug!(%error, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    info!("no longer accepting connections; letting open ones finish");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(drain) => info!("drain time over; closing the rest"),
    }
}
