//! An HTTP proxy between strongroom and an emulator that plays a backup
//! host's credentials: it forwards reads, listings and create-if-absent
//! writes, and answers 403 (as S3 or Azure refuse a request the
//! credentials do not allow) to every DELETE, every PUT that is not a
//! create-if-absent (`If-None-Match: *`), S3 copies and batch deletes, and
//! Azure copies, batches and property writes. It keeps the refused
//! requests for the test to look at.
//!
//! Requests are read one at a time on each connection (clients send the
//! next only after the last answer), so an answer of our own never
//! interleaves with the server's; a refused request closes its
//! connection. Bodies are framed by `Content-Length` (what strongroom's
//! client sends); a chunked body is refused.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};

/// Which service's refusals to play.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// S3: `AccessDenied`.
    S3,
    /// Azure Blob: `AuthorizationPermissionMismatch`.
    Azure,
}

/// A running proxy; stops when dropped.
pub struct RefusingProxy {
    /// Where clients connect: `http://127.0.0.1:PORT`.
    pub url: String,
    refused: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl RefusingProxy {
    /// Starts a proxy to `upstream` (`host:port`) on a free loopback port.
    pub fn start(upstream: &str, dialect: Dialect) -> RefusingProxy {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let refused = Arc::new(Mutex::new(Vec::new()));
        let (upstream, log) = (upstream.to_string(), refused.clone());
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, log) = (upstream.clone(), log.clone());
                tokio::spawn(async move { serve(client, &upstream, dialect, log).await });
            }
        });
        RefusingProxy { url: format!("http://{addr}"), refused, _rt: rt }
    }

    /// The requests refused so far: `METHOD path?query`.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap().clone()
    }

    /// Forgets the requests refused so far.
    pub fn clear(&self) {
        self.refused.lock().unwrap().clear();
    }
}

/// A request head.
struct Head {
    raw: Vec<u8>,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn query_has(&self, key: &str) -> bool {
        let Some((_, q)) = self.target.split_once('?') else { return false };
        q.split('&').any(|kv| kv.split('=').next() == Some(key))
    }

    fn query(&self, key: &str) -> Option<&str> {
        let (_, q) = self.target.split_once('?')?;
        q.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
    }

    fn creates_only(&self) -> bool {
        self.header("if-none-match").is_some_and(|v| v.trim() == "*")
    }

    /// Whether credentials with create, read and list rights only are
    /// refused this request.
    fn refused(&self, dialect: Dialect) -> bool {
        match (dialect, self.method.as_str()) {
            (_, "GET" | "HEAD") => false,
            (_, "DELETE") => true,
            // Batch delete; multipart initiate and complete pass (a
            // complete without If-None-Match would overwrite: refused).
            (Dialect::S3, "POST") => self.query_has("delete") || (self.query_has("uploadId") && !self.creates_only()),
            (Dialect::S3, "PUT") => {
                if self.header("x-amz-copy-source").is_some() {
                    return true;
                }
                let part = self.query_has("partNumber") && self.query_has("uploadId");
                !part && !self.creates_only()
            }
            (Dialect::Azure, "PUT") => {
                if self.header("x-ms-copy-source").is_some() {
                    return true;
                }
                match self.query("comp") {
                    // Staging a block creates nothing visible.
                    Some("block") => false,
                    Some("blocklist") | None => !self.creates_only(),
                    Some(_) => true,
                }
            }
            _ => true,
        }
    }
}

/// The client side of a connection, with what was read past the last head.
struct Reader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
}

impl Reader {
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        match self.half.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn head(&mut self) -> Option<Head> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill().await {
                return None;
            }
        };
        let raw: Vec<u8> = self.buf.drain(..end).collect();
        let text = String::from_utf8_lossy(&raw).to_string();
        let mut lines = text.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some(Head { raw, method, target, headers })
    }

    async fn body(&mut self, len: usize) -> Option<Vec<u8>> {
        while self.buf.len() < len {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..len).collect())
    }
}

fn refusal(dialect: Dialect) -> String {
    let (code, message, extra) = match dialect {
        Dialect::S3 => ("AccessDenied", "Access Denied", String::new()),
        Dialect::Azure => (
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
            "x-ms-error-code: AuthorizationPermissionMismatch\r\n".to_string(),
        ),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn serve(client: TcpStream, upstream: &str, dialect: Dialect, log: Arc<Mutex<Vec<String>>>) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let (cr, cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let cw = Arc::new(tokio::sync::Mutex::new(cw));
    let down = {
        let cw = cw.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match sr.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if cw.lock().await.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = cw.lock().await.shutdown().await;
        })
    };
    let mut reader = Reader { half: cr, buf: Vec::new() };
    while let Some(head) = reader.head().await {
        let chunked = head.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let len: usize = head.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let Some(body) = reader.body(len).await else { break };
        if chunked || head.refused(dialect) {
            log.lock().unwrap().push(format!("{} {}", head.method, head.target));
            let mut w = cw.lock().await;
            let _ = w.write_all(refusal(dialect).as_bytes()).await;
            let _ = w.shutdown().await;
            break;
        }
        if sw.write_all(&head.raw).await.is_err() || sw.write_all(&body).await.is_err() {
            break;
        }
    }
    let _ = sw.shutdown().await;
    down.abort();
}
