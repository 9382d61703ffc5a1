//! What a client sends to the real API server, seen from inside the
//! client: a tower layer in kube's client stack that records each request
//! line (`GET /apis/...?limit=10&continue=...`) and can hold one request
//! back while a test does something first (another writer's update, an
//! API server restart). The server's answers are the server's own; only
//! the moment a request leaves is chosen by the test.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Matcher = Box<dyn Fn(&str) -> bool + Send>;
type Action = Box<dyn FnOnce(String) -> BoxFuture<()> + Send>;

/// Handle on one client's requests; clones share them.
#[derive(Clone, Default)]
pub struct Wire {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    requests: Vec<String>,
    /// Run before the next request whose line matches, once.
    before: Vec<(Matcher, Action)>,
}

impl Wire {
    /// Every request line sent so far, in order.
    #[allow(clippy::missing_panics_doc)]
    pub fn requests(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
            .clone()
    }

    /// Request lines that match `f`.
    pub fn requests_where(&self, f: impl Fn(&str) -> bool) -> Vec<String> {
        self.requests().into_iter().filter(|r| f(r)).collect()
    }

    /// Holds the next request whose line matches `matches` until
    /// `action` (given that line) is done, then sends it.
    #[allow(clippy::missing_panics_doc)]
    pub fn before_next<F>(
        &self,
        matches: impl Fn(&str) -> bool + Send + 'static,
        action: impl FnOnce(String) -> F + Send + 'static,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .before
            .push((
                Box::new(matches),
                Box::new(move |line| Box::pin(action(line)) as BoxFuture<()>),
            ));
    }

    /// Holds the next request whose line matches `matches` until the test
    /// lets it go: [`Held::reached`] resolves (with the line) once the
    /// request is held, and [`Held::release`] sends it. The test can do
    /// anything meanwhile, blocking included (restart the API server).
    pub fn hold_next(&self, matches: impl Fn(&str) -> bool + Send + 'static) -> Held {
        let (reached_tx, reached) = tokio::sync::oneshot::channel();
        let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
        self.before_next(matches, move |line| async move {
            let _ = reached_tx.send(line);
            let _ = release_rx.await;
        });
        Held {
            reached: Some(reached),
            release: Some(release),
        }
    }

    /// Records `line`; the action to run before sending it, if any.
    fn sent(&self, line: String) -> Option<BoxFuture<()>> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let action = st
            .before
            .iter()
            .position(|(m, _)| m(&line))
            .map(|i| st.before.remove(i).1);
        st.requests.push(line.clone());
        action.map(|a| a(line))
    }

    /// The layer to put into a `kube::client::ClientBuilder`.
    pub fn layer(&self) -> WireLayer {
        WireLayer { wire: self.clone() }
    }
}

/// A request held back by [`Wire::hold_next`].
pub struct Held {
    reached: Option<tokio::sync::oneshot::Receiver<String>>,
    release: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Held {
    /// Waits (at most 30 s) until the request is held; its line.
    ///
    /// # Panics
    /// If no such request came, or this was asked before.
    #[allow(clippy::expect_used)]
    pub async fn reached(&mut self) -> String {
        let rx = self.reached.take().expect("Held::reached asked twice");
        tokio::time::timeout(std::time::Duration::from_secs(30), rx)
            .await
            .expect("the request to hold was not sent within 30 s")
            .expect("the client was dropped")
    }

    /// Sends the held request.
    pub fn release(&mut self) {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

pub struct WireLayer {
    wire: Wire,
}

impl<S> tower::Layer<S> for WireLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            wire: self.wire.clone(),
        }
    }
}

pub struct Observed<S> {
    inner: S,
    wire: Wire,
}

impl<S, B> tower::Service<http::Request<B>> for Observed<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let line = format!(
            "{} {}",
            req.method(),
            req.uri().path_and_query().map_or("", |p| p.as_str())
        );
        let action = self.wire.sent(line);
        // kube's stack (hyper's client at the bottom) sends nothing until
        // its future is polled, so the request leaves after the action.
        let response = self.inner.call(req);
        Box::pin(async move {
            if let Some(a) = action {
                a.await;
            }
            response.await
        })
    }
}
