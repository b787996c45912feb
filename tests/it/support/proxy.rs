//! A TCP proxy between strongroom and an emulator, for network faults:
//! `cut` (the server goes away: live connections are reset and new ones
//! are closed at once), `cut_after_upstream_bytes` (the same, once that
//! much has been sent towards the server), `resume`, and
//! `throttle_next_connections` (the next N connections are answered with
//! HTTP 503 SlowDown, a transient error clients must retry).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// Where clients connect: `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<State>,
    rt: tokio::runtime::Runtime,
}

#[derive(Default)]
struct State {
    cut: AtomicBool,
    /// Cut once this many bytes went upstream (0: never).
    cut_at: AtomicU64,
    upstream_bytes: AtomicU64,
    throttle: AtomicU64,
    /// Bumped on every cut; connections of an older generation stop.
    generation: AtomicU64,
    throttled: AtomicU64,
}

impl State {
    fn cut_now(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl Proxy {
    /// Starts a proxy to `upstream` (`host:port`) on a free loopback port.
    pub fn start(upstream: &str) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let upstream = upstream.to_string();
        let st = state.clone();
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let st = st.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move { serve(client, &upstream, st).await });
            }
        });
        Proxy { url: format!("http://{addr}"), state, rt }
    }

    /// The server goes away now.
    pub fn cut(&self) {
        self.state.cut_now();
    }

    /// The server goes away once `n` more bytes went towards it.
    pub fn cut_after_upstream_bytes(&self, n: u64) {
        let now = self.state.upstream_bytes.load(Ordering::SeqCst);
        self.state.cut_at.store(now + n, Ordering::SeqCst);
    }

    /// Whether the proxy has cut (by hand or by the byte budget).
    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }

    /// The server is back.
    pub fn resume(&self) {
        self.state.cut_at.store(0, Ordering::SeqCst);
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Answers the next `n` connections with 503 SlowDown.
    pub fn throttle_next_connections(&self, n: u64) {
        self.state.throttle.store(n, Ordering::SeqCst);
    }

    /// Connections answered with 503 so far.
    pub fn throttled(&self) -> u64 {
        self.state.throttled.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.cut_now();
        // The runtime is dropped with the proxy; its tasks end with it.
        let _ = &self.rt;
    }
}

async fn serve(mut client: TcpStream, upstream: &str, st: Arc<State>) {
    if st.cut.load(Ordering::SeqCst) {
        return;
    }
    let throttle = st.throttle.load(Ordering::SeqCst);
    if throttle > 0 && st.throttle.compare_exchange(throttle, throttle - 1, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    {
        // Read the request head, answer as a throttling S3 would, close.
        let mut buf = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.read(&mut buf)).await;
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                    <Message>Please reduce your request rate.</Message></Error>";
        let resp = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.write_all(resp.as_bytes()).await;
        let _ = client.shutdown().await;
        st.throttled.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let generation = st.generation.load(Ordering::SeqCst);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up_state = st.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let total = up_state.upstream_bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            let cut_at = up_state.cut_at.load(Ordering::SeqCst);
            if cut_at > 0 && total >= cut_at {
                up_state.cut_now();
            }
            if up_state.generation.load(Ordering::SeqCst) != generation {
                break;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down_state = st.clone();
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if down_state.generation.load(Ordering::SeqCst) != generation {
                break;
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let watch_state = st.clone();
    let watch = async move {
        while watch_state.generation.load(Ordering::SeqCst) == generation {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    // Whichever ends first ends the connection (both halves dropped).
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = watch => {}
    }
}
