//! The HTTP plumbing shared by the webhook port and the display port: the accept loop
//! and the response helpers.
//!
//! Everything runs on the one runtime thread, so a connection must never be able to hold
//! it: hyper reads headers with [`HEADER_TIMEOUT`] (also on idle keep-alive
//! connections), handlers bound body reads, and at most `capacity` connections are open
//! at once. A newcomer that finds the table full closes the connection that has gone
//! longest without a complete request ([`conns`](crate::conns)), so idle connections,
//! however many, never keep a push out; evictions and failed accepts are logged at most
//! once per 10 s ([`Throttle`]). On shutdown the listener closes, open connections finish
//! the request in hand and close, and stragglers are dropped after [`DRAIN`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::Level;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::StatusCode;

use crate::conns::Table;
use crate::ratelimit::Throttle;
use crate::shutdown::{self, Stop};
use crate::time;

pub type Body = Full<Bytes>;

pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DRAIN: Duration = Duration::from_secs(5);

/// Serves `handler` on `listener`, holding at most `capacity` connections, until `stop`
/// is given.
pub async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    capacity: usize,
    handler: H,
    mut stop: Stop,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(16 * 1024)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let mut table: Table<tokio::task::Id, tokio::task::AbortHandle> = Table::new(capacity);
    let mut evicted = Throttle::new(Level::Warn);
    let mut refused = Throttle::new(Level::Warn);
    let mut conns = JoinSet::new();
    loop {
        while let Some(done) = conns.try_join_next_with_id() {
            table.remove(&done.map_or_else(|e| e.id(), |(id, ())| id));
        }
        let due = evicted.due().into_iter().chain(refused.due()).min();
        let accepted = tokio::select! {
            _ = shutdown::stopped(&mut stop) => break,
            accepted = listener.accept() => accepted,
            _ = time::sleep_until(due) => {
                let now = tokio::time::Instant::now();
                evicted.flush(now, false);
                refused.flush(now, false);
                continue;
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                let line = format!("{name}: accept failed (a connection refused): {e}");
                refused.note(tokio::time::Instant::now(), line);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        make_room(name, &mut table, &mut evicted);
        let _ = stream.set_nodelay(true);
        let stamp = table.stamp();
        let handle = spawn_connection(
            name,
            &mut conns,
            builder.clone(),
            stream,
            handler.clone(),
            stamp.clone(),
            stop.clone(),
        );
        table.insert(handle.id(), stamp, handle);
    }
    drop(listener);
    drain(name, conns).await;
}

/// When the table is full, closes the connection that has gone longest without a
/// complete request, so the newcomer (perhaps a push) gets its place.
fn make_room(
    name: &str,
    table: &mut Table<tokio::task::Id, tokio::task::AbortHandle>,
    evicted: &mut Throttle,
) {
    if !table.is_full() {
        return;
    }
    if let Some((oldest, idle)) = table.evict_oldest() {
        oldest.abort();
        let line = format!(
            "{name}: {} connections open, closed the one that had sent no complete \
             request for longest ({idle:.1?}) to take a new one",
            table.capacity()
        );
        evicted.note(tokio::time::Instant::now(), line);
    }
}

/// Serves one accepted connection in its own task, stamping `answered` whenever a
/// response is ready (its request was complete, or refused), and closing it gracefully
/// at the stop.
fn spawn_connection<H, F>(
    name: &'static str,
    conns: &mut JoinSet<()>,
    builder: Arc<http1::Builder>,
    stream: tokio::net::TcpStream,
    handler: H,
    answered: crate::conns::Stamp,
    mut stop: Stop,
) -> tokio::task::AbortHandle
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send + 'static,
{
    let service = service_fn(move |req| {
        let response = handler(req);
        let answered = answered.clone();
        async move {
            let r = response.await;
            answered.touch();
            r
        }
    });
    conns.spawn(async move {
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = shutdown::stopped(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            log::debug!("{name}: connection ended: {e}");
        }
    })
}

/// Gives the open connections [`DRAIN`] to finish their answers after the stop, then
/// drops the rest.
async fn drain(name: &'static str, mut conns: JoinSet<()>) {
    let drained =
        tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        log::warn!(
            "{name}: {} connection(s) still open after {DRAIN:?}, dropped",
            conns.len()
        );
        conns.abort_all();
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    if !body.is_empty() {
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    resp
}

/// A JSON response.
pub fn json(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Ends the connection after this response: the rest of the request is not read.
pub fn closing(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    resp
}
