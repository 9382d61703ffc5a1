//! The little HTTP calico-node serves (kubelet's probes, Prometheus'
//! scrapes): one request per connection, read with a time limit, answered
//! by a handler given the method and the path, then closed.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer to a path the server does not serve.
pub fn not_found() -> Vec<u8> {
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
}

/// How many connections are served at once; more wait in the listen
/// queue until one finishes (a flood of idle connections costs bounded
/// memory, at most `READ_TIMEOUT` of delay each).
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client has to take the response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections until the task is aborted; each request gets
/// `handler(method, path)`'s bytes as its whole response. At most
/// [`MAX_CONNECTIONS`] at once.
pub async fn serve<H, F>(listener: TcpListener, handler: H) -> std::io::Result<()>
where
    H: Fn(String, String) -> F + Clone + Send + 'static,
    F: Future<Output = Vec<u8>> + Send,
{
    serve_limited(listener, handler, MAX_CONNECTIONS).await
}

async fn serve_limited<H, F>(listener: TcpListener, handler: H, max: usize) -> std::io::Result<()>
where
    H: Fn(String, String) -> F + Clone + Send + 'static,
    F: Future<Output = Vec<u8>> + Send,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let (mut sock, _) = listener.accept().await?;
        let handler = handler.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut buf = [0u8; 1024];
            let Ok(Ok(n)) = tokio::time::timeout(READ_TIMEOUT, sock.read(&mut buf)).await else {
                return;
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let mut words = req.split_whitespace();
            let method = words.next().unwrap_or("").to_string();
            let path = words.next().unwrap_or("").to_string();
            let out = handler(method, path).await;
            let _ = tokio::time::timeout(WRITE_TIMEOUT, sock.write_all(&out)).await;
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn get(addr: std::net::SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn idle_connections_beyond_the_limit_wait_and_do_not_pile_up() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_limited(
            listener,
            |_, path| async move { format!("HTTP/1.1 200 OK\r\n\r\n{path}").into_bytes() },
            2,
        ));
        assert!(get(addr).await.ends_with("/x"));
        // Two connections that send nothing hold both slots...
        let idle1 = TcpStream::connect(addr).await.unwrap();
        let _idle2 = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // ...so a third request waits (it would be answered at once
        // without the limit)...
        let third = tokio::spawn(get(addr));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!third.is_finished(), "answered beyond the limit");
        // ...until one of them goes.
        drop(idle1);
        let out = tokio::time::timeout(Duration::from_secs(3), third)
            .await
            .unwrap()
            .unwrap();
        assert!(out.ends_with("/x"), "{out}");
    }
}
