//! Connections: accepted by our own loop so that every one is bounded. At most
//! `--max-connections` are open (beyond that a connection gets a 503 at once and is closed); a
//! client has `--header-read-timeout` to send a request's headers; a connection with no request
//! and no traffic for `--keep-alive-timeout` is closed; a client that stops reading an answer
//! (its writes blocked) for `--stream-stall-timeout` loses the connection, which cancels its
//! sequence and frees its batch slot.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// The bounds on connections.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub stall_timeout: Duration,
}

impl ConnLimits {
    /// How often a connection's clocks are looked at.
    fn tick(&self) -> Duration {
        let shortest = self.header_read_timeout.min(self.keep_alive_timeout).min(self.stall_timeout);
        (shortest / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests (each is told to close once its answer is sent) and returns when all are closed.
pub async fn serve(listener: TcpListener, router: Router, limits: ConnLimits, shutdown: impl Future<Output = ()>) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let permits = Arc::new(Semaphore::new(max));
    let (draining, drain_rx) = watch::channel(false);
    let limits = Arc::new(limits);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&permits).try_acquire_owned() {
                    Ok(permit) => {
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(serve_one(stream, router.clone(), Arc::clone(&limits), drain_rx.clone(), permit));
                    }
                    Err(_) => refuse(stream, max),
                },
                // Out of file descriptors, or a connection reset before it was accepted: go on.
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    draining.send_replace(true);
    // Every connection holds a permit until it is closed.
    let _ = permits.acquire_many(max as u32).await;
}

/// Answers 503 without reading the request and closes, within a second: the answer is written,
/// then what the client sent is drained so that closing does not reset the connection first.
fn refuse(mut stream: TcpStream, max: usize) {
    let body = format!(
        r#"{{"error":{{"message":"the server has {max} connections open, its limit (--max-connections); retry later","type":"server_error","param":null,"code":null}}}}"#
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(answer.as_bytes()).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, io::Error>(())
        })
        .await;
    });
}

async fn serve_one(stream: TcpStream, router: Router, limits: Arc<ConnLimits>, mut drain: watch::Receiver<bool>, _permit: OwnedSemaphorePermit) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked { inner: stream, activity: Arc::clone(&activity) });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let guard = RequestGuard::new(Arc::clone(&activity));
            let router = router.clone();
            async move {
                let resp = router.oneshot(req.map(Body::new)).await.unwrap_or_else(|e: Infallible| match e {});
                Ok::<_, Infallible>(resp.map(|b| Body::new(Guarded { inner: b, _guard: guard })))
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining = *drain.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let mut tick = tokio::time::interval(limits.tick());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = drain.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                if activity.write_stalled_for() > limits.stall_timeout {
                    tracing::info!("a client stopped reading its answer for {:?} (--stream-stall-timeout); connection closed", limits.stall_timeout);
                    break;
                }
                if activity.idle_for() > limits.keep_alive_timeout {
                    break;
                }
            }
        }
    }
}

/// What a connection did last, in milliseconds since it opened (0: never).
struct Activity {
    opened: Instant,
    last_io: AtomicU64,
    write_blocked_since: AtomicU64,
    requests: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self { opened: Instant::now(), last_io: AtomicU64::new(1), write_blocked_since: AtomicU64::new(0), requests: AtomicUsize::new(0) }
    }

    fn now(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64 + 1
    }

    fn touch(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    /// How long the connection has had no request and no traffic.
    fn idle_for(&self) -> Duration {
        if self.requests.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(self.now().saturating_sub(self.last_io.load(Ordering::Relaxed)))
    }

    /// How long a write has been waiting for the client to read.
    fn write_stalled_for(&self) -> Duration {
        match self.write_blocked_since.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_millis(self.now().saturating_sub(since)),
        }
    }
}

/// A request being answered (until its response body is done or dropped).
struct RequestGuard(Arc<Activity>);

impl RequestGuard {
    fn new(a: Arc<Activity>) -> Self {
        a.requests.fetch_add(1, Ordering::Relaxed);
        a.touch();
        Self(a)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request counted while it is sent.
struct Guarded {
    inner: Body,
    _guard: RequestGuard,
}

impl http_body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that records its traffic and how long its writes have been blocked.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl Tracked {
    fn wrote(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Pending => {
                let _ = self.activity.write_blocked_since.compare_exchange(0, self.activity.now(), Ordering::Relaxed, Ordering::Relaxed);
            }
            Poll::Ready(_) => {
                self.activity.write_blocked_since.store(0, Ordering::Relaxed);
                self.activity.touch();
            }
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&r);
        r
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Raises the soft limit on open files to the hard one, so that `--max-connections` can be
/// reached (many systems start processes with 1024).
pub fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit on a valid struct of ours.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    }
}
