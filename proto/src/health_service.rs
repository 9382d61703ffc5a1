//! A ready-made implementation of the `Health` service.
//!
//! A daemon creates a [`HealthReporter`], hands the service to its gRPC
//! router, and flips readiness as its own state changes; the reporter is a
//! cheap clonable handle.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::health::health_server::{Health, HealthServer};
use crate::health::{CheckRequest, CheckResponse};

#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    ready: bool,
    detail: String,
}

/// Clonable handle a daemon uses to publish its readiness.
#[derive(Clone)]
pub struct HealthReporter {
    component: Arc<str>,
    tx: Arc<watch::Sender<State>>,
}

impl HealthReporter {
    pub fn new(component: &str) -> Self {
        let (tx, _) = watch::channel(State {
            ready: false,
            detail: "starting".into(),
        });
        HealthReporter {
            component: component.into(),
            tx: Arc::new(tx),
        }
    }

    pub fn set_ready(&self) {
        self.tx.send_replace(State {
            ready: true,
            detail: String::new(),
        });
    }

    pub fn set_not_ready(&self, detail: impl Into<String>) {
        self.tx.send_replace(State {
            ready: false,
            detail: detail.into(),
        });
    }

    pub fn is_ready(&self) -> bool {
        self.tx.borrow().ready
    }

    /// The tonic service to add to a router.
    pub fn service(&self) -> HealthServer<Self> {
        HealthServer::new(self.clone())
    }
}

#[tonic::async_trait]
impl Health for HealthReporter {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        let s = self.tx.borrow().clone();
        Ok(Response::new(CheckResponse {
            component: self.component.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            live: true,
            ready: s.ready,
            detail: s.detail,
        }))
    }
}
