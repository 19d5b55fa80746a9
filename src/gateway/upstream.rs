//! Connections from the preview proxy to project pods.
//!
//! Each downstream connection holds one upstream connection and drives it in its own task
//! ([`Held::drive`], polled beside the server connection): a request and its answer never cross
//! tasks, where a shared pool's connection task cost a hand-off, a wake-up and often a thread
//! switch per request. When the downstream connection ends, or its next request is for another
//! pod, an idle upstream connection goes to a shared pool ([`Upstreams`]), undriven, for the next
//! downstream connection to take: clients that open a connection per request still reuse
//! upstream connections, as they did with the shared pool, rather than leave a socket in
//! TIME_WAIT per request.
//!
//! Nothing here decides who may reach a pod: the proxy authorises every request before it asks
//! for a connection, and connections are keyed by the pod's address and port alone.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use axum::body::Body;
use futures::task::AtomicWaker;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::debug;

type Upstream = Connection<TokioIo<TcpStream>, Body>;

/// Longest a connection attempt to a pod may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle pooled connections older than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per pod address, and in all.
const MAX_IDLE_PER_ADDRESS: usize = 64;
const MAX_IDLE: usize = 4096;
/// How long a reused connection may take to be ready for the next request before a fresh one
/// is opened instead (it is ready at once unless its last answer was left unread).
const READY_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The pod refused or did not answer the connection: it is not serving.
    #[error("cannot connect to {address}: {message}")]
    Connect { address: SocketAddr, message: String },
    #[error("the request to {address} failed: {source}")]
    Request { address: SocketAddr, source: hyper::Error },
}

impl UpstreamError {
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}

/// An idle connection in the shared pool: its sender, and the connection itself, which no task
/// polls until a downstream connection takes it.
struct Idle {
    sender: SendRequest<Body>,
    connection: Pin<Box<Upstream>>,
    since: Instant,
}

/// The shared pool of idle upstream connections, by pod address.
#[derive(Default)]
pub struct Upstreams {
    idle: Mutex<IdlePool>,
}

#[derive(Default)]
struct IdlePool {
    by_address: HashMap<SocketAddr, Vec<Idle>>,
    count: usize,
    swept: Option<Instant>,
}

impl Upstreams {
    fn take(&self, address: SocketAddr) -> Option<Idle> {
        let mut pool = self.idle.lock().expect("upstream pool lock");
        let idle = pool.by_address.get_mut(&address)?;
        let (mut taken, mut removed) = (None, 0);
        while let Some(candidate) = idle.pop() {
            removed += 1;
            if candidate.since.elapsed() < IDLE_TIMEOUT && !candidate.sender.is_closed() {
                taken = Some(candidate);
                break;
            }
        }
        if idle.is_empty() {
            pool.by_address.remove(&address);
        }
        pool.count -= removed;
        taken
    }

    fn put(&self, address: SocketAddr, sender: SendRequest<Body>, connection: Pin<Box<Upstream>>) {
        let now = Instant::now();
        let mut pool = self.idle.lock().expect("upstream pool lock");
        // Pods come and go with their addresses: sweep what expired now and then, so neither an
        // address nor its sockets stay for ever.
        if pool.swept.is_none_or(|at| now.duration_since(at) >= IDLE_TIMEOUT / 6) {
            pool.by_address.retain(|_, idle| {
                idle.retain(|i| now.duration_since(i.since) < IDLE_TIMEOUT && !i.sender.is_closed());
                !idle.is_empty()
            });
            pool.swept = Some(now);
            pool.count = pool.by_address.values().map(Vec::len).sum();
        }
        if pool.count >= MAX_IDLE {
            return;
        }
        let idle = pool.by_address.entry(address).or_default();
        if idle.len() < MAX_IDLE_PER_ADDRESS {
            idle.push(Idle { sender, connection, since: now });
            pool.count += 1;
        }
    }

    /// Idle connections in the pool.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.lock().expect("upstream pool lock").count
    }
}

/// The upstream connections of one downstream connection: the one its requests use, and those
/// its task drives.
pub struct Held {
    upstreams: Arc<Upstreams>,
    state: Mutex<HeldState>,
    /// The downstream connection's task, woken when a connection is added to drive.
    driver: AtomicWaker,
}

#[derive(Default)]
struct HeldState {
    /// The connection the next request to `address` uses; `None` while a request is sending.
    current: Option<Current>,
    driven: Vec<Driven>,
    next_id: u64,
}

struct Current {
    id: u64,
    address: SocketAddr,
    sender: SendRequest<Body>,
}

struct Driven {
    id: u64,
    connection: Pin<Box<Upstream>>,
}

impl Held {
    pub fn new(upstreams: Arc<Upstreams>) -> Arc<Self> {
        Arc::new(Self { upstreams, state: Mutex::default(), driver: AtomicWaker::new() })
    }

    /// Polls the held connections for as long as the downstream connection lasts: run it beside
    /// the server connection, in the same task.
    pub async fn drive(&self) -> Infallible {
        poll_fn(|cx| {
            self.driver.register(cx.waker());
            let mut state = self.state.lock().expect("held upstream lock");
            state.driven.retain_mut(|driven| match driven.connection.as_mut().poll(cx) {
                Poll::Pending => true,
                Poll::Ready(result) => {
                    if let Err(error) = result {
                        debug!(%error, "upstream connection ended with an error");
                    }
                    false
                }
            });
            Poll::Pending
        })
        .await
    }

    /// The downstream connection ended: its idle upstream connection goes to the shared pool.
    pub fn release(&self) {
        let mut state = self.state.lock().expect("held upstream lock");
        if let Some(current) = state.current.take() {
            pool(&self.upstreams, &mut state, current);
        }
    }

    /// Sends `request` (origin-form URI, `Host` set) to `address`, on the held connection if it
    /// goes there, else on a pooled one, else on a new one.
    pub async fn send(
        &self,
        address: SocketAddr,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut reused = self.checkout(address);
        loop {
            let fresh = reused.is_none();
            let mut current = match reused.take() {
                Some(current) => current,
                None => self.connect(address).await?,
            };
            if !fresh && !current.sender.is_ready() {
                match tokio::time::timeout(READY_WAIT, current.sender.ready()).await {
                    Ok(Ok(())) => {}
                    _ => continue,
                }
            }
            match current.sender.try_send_request(request).await {
                Ok(response) => {
                    self.state.lock().expect("held upstream lock").current = Some(current);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    // A reused connection the pod had closed: the request never left, so it is
                    // sent again on a fresh one.
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(UpstreamError::Request { address, source: error.into_error() }),
                },
            }
        }
    }

    fn checkout(&self, address: SocketAddr) -> Option<Current> {
        let mut state = self.state.lock().expect("held upstream lock");
        match state.current.take() {
            Some(current) if current.address == address && !current.sender.is_closed() => return Some(current),
            Some(other) => pool(&self.upstreams, &mut state, other),
            None => {}
        }
        let idle = self.upstreams.take(address)?;
        Some(self.adopt(&mut state, address, idle.sender, idle.connection))
    }

    async fn connect(&self, address: SocketAddr) -> Result<Current, UpstreamError> {
        let (sender, connection) = handshake(address).await?;
        let mut state = self.state.lock().expect("held upstream lock");
        Ok(self.adopt(&mut state, address, sender, Box::pin(connection)))
    }

    fn adopt(
        &self,
        state: &mut HeldState,
        address: SocketAddr,
        sender: SendRequest<Body>,
        connection: Pin<Box<Upstream>>,
    ) -> Current {
        let id = state.next_id;
        state.next_id += 1;
        state.driven.push(Driven { id, connection });
        self.driver.wake();
        Current { id, address, sender }
    }
}

/// Moves `current`'s connection from the held ones to the shared pool, if it is idle; else lets
/// it close (its sender dropped, its task finishes it).
fn pool(upstreams: &Upstreams, state: &mut HeldState, current: Current) {
    if !current.sender.is_ready() {
        return;
    }
    if let Some(at) = state.driven.iter().position(|d| d.id == current.id) {
        let driven = state.driven.swap_remove(at);
        upstreams.put(current.address, current.sender, driven.connection);
    }
}

/// A connection to `address` for this one request, driven by a task of its own, which outlives
/// the request and hands the connection over if it switches protocols (a WebSocket).
pub async fn send_alone(address: SocketAddr, request: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
    let (mut sender, connection) = handshake(address).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            debug!(%error, "upgradable upstream connection ended with an error");
        }
    });
    sender.send_request(request).await.map_err(|source| UpstreamError::Request { address, source })
}

async fn handshake(address: SocketAddr) -> Result<(SendRequest<Body>, Upstream), UpstreamError> {
    let connect_error = |message: String| UpstreamError::Connect { address, message };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Err(connect_error(error.to_string())),
        Err(_) => return Err(connect_error("timed out".to_owned())),
    };
    let _ = stream.set_nodelay(true);
    http1::handshake(TokioIo::new(stream)).await.map_err(|error| connect_error(error.to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A dev server on loopback that answers every request with the number of the connection it
    /// came on, and, if `close_after_answer`, closes each connection right after its first answer
    /// without saying so (as a server whose keep-alive timeout has passed).
    async fn dev_server(close_after_answer: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let mut buffer = vec![0; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(read) = stream.read(&mut buffer).await else { return };
                        if read == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buffer[..read]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let body = number.to_string();
                            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                            stream.write_all(answer.as_bytes()).await.unwrap();
                            if close_after_answer {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    /// A downstream connection's `Held`, driven by a task as the server's connection task would.
    fn downstream(upstreams: &Arc<Upstreams>) -> Arc<Held> {
        let held = Held::new(upstreams.clone());
        let driven = held.clone();
        tokio::spawn(async move { driven.drive().await });
        held
    }

    /// The number of the upstream connection that answered a GET sent through `held`.
    async fn answered_on(held: &Held, address: SocketAddr) -> String {
        let request = Request::get("/").header("host", "dev").body(Body::empty()).unwrap();
        let response = held.send(address, request).await.expect("an answer");
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_downstream_connection_keeps_one_upstream_connection_and_leaves_it_to_the_next() {
        let (address, accepted) = dev_server(false).await;
        let upstreams = Arc::new(Upstreams::default());
        let first = downstream(&upstreams);
        for _ in 0..3 {
            assert_eq!(answered_on(&first, address).await, "1");
        }
        first.release();
        assert_eq!(upstreams.idle(), 1);
        let second = downstream(&upstreams);
        assert_eq!(answered_on(&second, address).await, "1", "the pooled connection is reused");
        assert_eq!(upstreams.idle(), 0);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_request_for_another_pod_pools_the_held_connection_and_opens_its_own() {
        let (one, _) = dev_server(false).await;
        let (other, other_accepted) = dev_server(false).await;
        let upstreams = Arc::new(Upstreams::default());
        let held = downstream(&upstreams);
        assert_eq!(answered_on(&held, one).await, "1");
        assert_eq!(answered_on(&held, other).await, "1");
        assert_eq!(upstreams.idle(), 1, "the connection to the first pod waits in the pool");
        assert_eq!(answered_on(&held, one).await, "1", "and is taken back from it");
        assert_eq!(other_accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_pod_closed_is_replaced_without_failing_the_request() {
        let (address, accepted) = dev_server(true).await;
        let upstreams = Arc::new(Upstreams::default());
        let first = downstream(&upstreams);
        assert_eq!(answered_on(&first, address).await, "1");
        first.release();
        let second = downstream(&upstreams);
        assert_eq!(answered_on(&second, address).await, "2");
        assert_eq!(answered_on(&second, address).await, "3");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_pod_that_refuses_connections_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let held = downstream(&Arc::new(Upstreams::default()));
        let request = Request::get("/").header("host", "dev").body(Body::empty()).unwrap();
        let error = held.send(address, request).await.expect_err("nothing listens");
        assert!(error.is_connect(), "{error}");
    }
}
