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

/// Accepts connections until the task is aborted; each request gets
/// `handler(method, path)`'s bytes as its whole response.
pub async fn serve<H, F>(listener: TcpListener, handler: H) -> std::io::Result<()>
where
    H: Fn(String, String) -> F + Clone + Send + 'static,
    F: Future<Output = Vec<u8>> + Send,
{
    loop {
        let (mut sock, _) = listener.accept().await?;
        let handler = handler.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let Ok(Ok(n)) = tokio::time::timeout(READ_TIMEOUT, sock.read(&mut buf)).await else {
                return;
            };
            let req = String::from_utf8_lossy(&buf[..n]);
            let mut words = req.split_whitespace();
            let method = words.next().unwrap_or("").to_string();
            let path = words.next().unwrap_or("").to_string();
            let out = handler(method, path).await;
            let _ = sock.write_all(&out).await;
        });
    }
}
