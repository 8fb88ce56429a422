//! A lean HTTP/1.1 client for plain-HTTP endpoints: a pool of keep-alive connections per
//! server (taken and returned per request, so a closed-loop worker keeps reusing one),
//! with the address resolved once. Load generation spends its CPU here, so it does only
//! what a request needs.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONTENT_TYPE, HOST};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;

/// One server's connections.
pub struct Http1Pool {
    addr: SocketAddr,
    /// The request target in origin form (`/v1/completions?x=1`): servers route that form,
    /// and some (llama.cpp's) route nothing else. The absolute form is for proxies.
    uri: Uri,
    host: HeaderValue,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

/// A response whose body is still to be read.
pub struct Http1Response {
    pub status: http::StatusCode,
    pub content_type: String,
    body: Incoming,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Http1Pool {
    pub fn new(addr: SocketAddr, url: &reqwest::Url) -> Result<Self, String> {
        let uri = origin_form(url)?;
        let host = HeaderValue::from_str(&host_header(url)).map_err(|e| format!("{url}: {e}"))?;
        Ok(Http1Pool { addr, uri, host, idle: Mutex::new(Vec::new()) })
    }

    /// The same server with no connections yet.
    pub fn fork(&self) -> Self {
        Http1Pool { addr: self.addr, uri: self.uri.clone(), host: self.host.clone(), idle: Mutex::new(Vec::new()) }
    }

    async fn connection(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        loop {
            let idle = self.idle.lock().pop();
            match idle {
                Some(mut conn) => {
                    if conn.ready().await.is_ok() {
                        return Ok(conn);
                    }
                }
                None => break,
            }
        }
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {} failed: {e}", self.addr))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends a POST with `body` and returns the response head; the body is read with
    /// [`Http1Response::next_chunk`] or [`Http1Response::bytes`].
    pub async fn post(&self, headers: &HeaderMap, body: Bytes) -> Result<Http1Response, String> {
        let mut conn = self.connection().await?;
        let mut request = Request::post(self.uri.clone())
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let h = request.headers_mut();
        h.insert(HOST, self.host.clone());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in headers {
            h.insert(k.clone(), v.clone());
        }
        let response = conn.send_request(request).await.map_err(|e| describe(&e))?;
        let (parts, body) = response.into_parts();
        let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        Ok(Http1Response { status: parts.status, content_type, body, conn: Some(conn) })
    }

    fn give_back(&self, conn: SendRequest<Full<Bytes>>) {
        if !conn.is_closed() {
            self.idle.lock().push(conn);
        }
    }
}

impl Http1Response {
    /// The next piece of the body as it arrives; `None` at the end (the connection then
    /// goes back to its pool).
    pub async fn next_chunk(&mut self, pool: &Http1Pool) -> Result<Option<Bytes>, String> {
        loop {
            match self.body.frame().await {
                None => {
                    if let Some(conn) = self.conn.take() {
                        pool.give_back(conn);
                    }
                    return Ok(None);
                }
                Some(Err(e)) => return Err(describe(&e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
            }
        }
    }

    /// The whole body; `Ok(None)` when it is longer than `limit` bytes (reading stops there).
    pub async fn bytes(&mut self, pool: &Http1Pool, limit: usize) -> Result<Option<Bytes>, String> {
        let first = match self.next_chunk(pool).await? {
            None => return Ok(Some(Bytes::new())),
            Some(b) => b,
        };
        let Some(second) = self.next_chunk(pool).await? else {
            return Ok((first.len() <= limit).then_some(first));
        };
        let mut all = Vec::with_capacity(first.len() + second.len());
        all.extend_from_slice(&first);
        all.extend_from_slice(&second);
        while let Some(more) = self.next_chunk(pool).await? {
            if all.len() + more.len() > limit {
                return Ok(None);
            }
            all.extend_from_slice(&more);
        }
        Ok((all.len() <= limit).then(|| Bytes::from(all)))
    }
}

/// The origin-form request target of `url`: its path and query, never the scheme or host.
pub fn origin_form(url: &reqwest::Url) -> Result<Uri, String> {
    let mut target = url.path().to_string();
    if target.is_empty() {
        target.push('/');
    }
    if let Some(q) = url.query() {
        target.push('?');
        target.push_str(q);
    }
    target.parse().map_err(|e| format!("{url}: {e}"))
}

/// The `Host` header of `url`: the host, and the port when it is not the scheme's default.
pub fn host_header(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

fn describe(e: &hyper::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_target_is_origin_form_with_the_host_apart() {
        let url = reqwest::Url::parse("http://127.0.0.1:8080/v1/chat/completions?x=1").unwrap();
        assert_eq!(origin_form(&url).unwrap().to_string(), "/v1/chat/completions?x=1");
        assert_eq!(host_header(&url), "127.0.0.1:8080");
        let bare = reqwest::Url::parse("http://[::1]").unwrap();
        assert_eq!(origin_form(&bare).unwrap().to_string(), "/");
        assert_eq!(host_header(&bare), "[::1]");
    }
}
