//! The policy dataplane: network policy as an nftables table felix owns
//! (`inet calico-rs-filter`), programmed from [`PolicySnapshot`]s.
//!
//! ```text
//!  watch<Arc<PolicySnapshot>> ──► run ──► Renderer (pure) ──► Desired ──► script::delta / full ──► crate::nft
//!                                  ▲                                                                   │
//!                                  └── resync every 90 s: list the table, compare, replace ◄───────────┘
//! ```
//!
//! [`crate::nft`] is one libnftables context in felix (in-process
//! transactions), or the `nft` binary when the library is missing.
//!
//! - [`render`]: snapshot → [`Desired`] (sets, chains, dispatch maps), the
//!   semantics of [`crate::policy::eval`] in nft rules.
//! - [`script`]: [`Desired`] → one nft transaction, whole or as a delta.
//! - [`PolicyTable`]: applies those to the kernel and reads the table back.
//! - [`run`]: the task felix's daemon spawns.
//!
//! Every write is one nft transaction: packets see the old table or
//! the new one, never half of a policy. Nothing is written while the
//! snapshot is not `synced`, and a stopped task leaves the table in the
//! kernel, so policy stays enforced across a restart; the first write of a
//! new task replaces the table atomically.

pub mod render;
pub mod script;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

pub use crate::nft::{Backend, NftError};

pub use render::{Desired, RenderError, RenderOptions, Renderer, render};
pub use script::TableOptions;

use super::PolicySnapshot;

/// felix's policy table (family `inet`).
pub const DEFAULT_TABLE: &str = "calico-rs-filter";

/// How the policy dataplane runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDataplaneConfig {
    /// The table felix owns (family `inet`); nothing else is touched.
    pub table: String,
    /// The `nft` binary.
    pub nft: String,
    /// Workload interfaces are this prefix followed by anything.
    pub iface_prefix: String,
    /// How often the table is read back and restored if someone changed it
    /// (Calico's `RouteRefreshInterval`/`IptablesRefreshInterval`: 90 s).
    pub resync_interval: Duration,
    /// `DefaultEndpointToHostAction`: `true` accepts what a pod's egress
    /// policy allows to the host itself (Calico's Kubernetes default,
    /// `ACCEPT`); `false` drops it.
    pub endpoint_to_host_accept: bool,
    /// The packet mark bit Pass rules use.
    pub pass_mark: u32,
    /// Wait after a failed write before trying again (doubling up to
    /// `retry_max`).
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// Program through libnftables in-process when it loads (`false`:
    /// always a child `nft` per change, as before; the bench compares
    /// the two).
    pub nft_library: bool,
}

impl Default for PolicyDataplaneConfig {
    fn default() -> Self {
        PolicyDataplaneConfig {
            table: DEFAULT_TABLE.to_string(),
            nft: "nft".to_string(),
            iface_prefix: "cali".to_string(),
            resync_interval: Duration::from_secs(90),
            endpoint_to_host_accept: true,
            pass_mark: render::DEFAULT_PASS_MARK,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
            nft_library: true,
        }
    }
}

impl PolicyDataplaneConfig {
    pub fn table_options(&self) -> TableOptions {
        TableOptions {
            table: self.table.clone(),
            iface_prefix: self.iface_prefix.clone(),
            endpoint_to_host_accept: self.endpoint_to_host_accept,
        }
    }

    pub fn render_options(&self) -> RenderOptions {
        RenderOptions {
            pass_mark: self.pass_mark,
        }
    }
}

/// What one [`PolicyTable::apply`] or [`PolicyTable::resync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing to do.
    InSync,
    /// Only the difference was written.
    Delta,
    /// The whole table was replaced.
    Full,
}

/// felix's policy table in the network namespace of the thread that made
/// it (see [`crate::nft`]).
#[derive(Debug)]
pub struct PolicyTable {
    cfg: PolicyDataplaneConfig,
    nft: crate::nft::Nft,
    renderer: Renderer,
    /// What was last written successfully.
    applied: Option<Desired>,
    /// A digest of the table as the kernel listed it right after the last
    /// full write, while no delta has been written since (`None`
    /// otherwise).
    listed: Option<Vec<u8>>,
}

impl PolicyTable {
    pub fn new(cfg: PolicyDataplaneConfig) -> PolicyTable {
        PolicyTable {
            renderer: Renderer::new(cfg.render_options()),
            nft: crate::nft::Nft::new(&cfg.nft, cfg.nft_library),
            cfg,
            applied: None,
            listed: None,
        }
    }

    pub fn config(&self) -> &PolicyDataplaneConfig {
        &self.cfg
    }

    /// Whether the table is written in-process or by the `nft` binary.
    pub fn backend(&self) -> Backend {
        self.nft.backend()
    }

    /// The table last written.
    pub fn applied(&self) -> Option<&Desired> {
        self.applied.as_ref()
    }

    /// Renders `snap` and makes the kernel's table equal to it: a delta
    /// from the last write when there is one (a failed delta falls back to
    /// replacing the whole table), else a full replace.
    pub async fn apply(&mut self, snap: &PolicySnapshot) -> Result<Applied, NftError> {
        let desired = self.renderer.render(snap);
        self.apply_desired(desired).await
    }

    /// [`PolicyTable::apply`] of an already rendered table.
    pub async fn apply_desired(&mut self, desired: Desired) -> Result<Applied, NftError> {
        let opts = self.cfg.table_options();
        if let Some(old) = &self.applied {
            let Some(script) = script::delta(&opts, old, &desired) else {
                return Ok(Applied::InSync);
            };
            match self.write(&script).await {
                Ok(()) => {
                    self.applied = Some(desired);
                    self.listed = None;
                    return Ok(Applied::Delta);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a policy delta failed; replacing the whole table");
                }
            }
        }
        self.replace(desired).await?;
        Ok(Applied::Full)
    }

    /// Reads the table back; if it is not what felix wrote (someone
    /// flushed or edited it), or deltas were written since the last
    /// listing, replaces it with the last written table. `Ok(InSync)`
    /// when nothing was written yet.
    pub async fn resync(&mut self) -> Result<Applied, NftError> {
        let Some(desired) = self.applied.clone() else {
            return Ok(Applied::InSync);
        };
        if let Some(seen) = &self.listed {
            let now = self.list().await?.map(|v| digest(&v));
            if now.as_ref() == Some(seen) {
                return Ok(Applied::InSync);
            }
            tracing::warn!(table = %self.cfg.table, "the policy table was changed behind felix's back; restoring it");
        }
        self.replace(desired).await?;
        Ok(Applied::Full)
    }

    async fn replace(&mut self, desired: Desired) -> Result<(), NftError> {
        self.applied = None;
        self.listed = None;
        let script = script::full(&self.cfg.table_options(), &desired);
        self.write(&script).await?;
        self.applied = Some(desired);
        self.listed = self.list().await?.map(|v| digest(&v));
        Ok(())
    }

    /// The table as `nft -j list table` shows it, without handles, or
    /// `None` if it does not exist.
    pub async fn list(&self) -> Result<Option<Value>, NftError> {
        self.nft.list_table("inet", &self.cfg.table).await
    }

    /// Runs `script` as one transaction.
    pub async fn write(&self, script: &str) -> Result<(), NftError> {
        self.nft.run(script).await
    }
}

/// SHA-1 of a listing: what a resync compares, instead of keeping the
/// whole listing.
fn digest(v: &Value) -> Vec<u8> {
    use sha1::Digest as _;
    sha1::Sha1::digest(v.to_string().as_bytes()).to_vec()
}

/// What the kernel's table holds, as [`run_reporting`] reports it: the
/// CNI ADD waits until a new pod's interface is programmed before it
/// returns, so that the pod is reachable (and policed) from its first
/// packet.
#[derive(Debug, Clone, Default)]
pub enum Programmed {
    /// Nothing written by this felix yet.
    #[default]
    Starting,
    /// This snapshot is in the kernel.
    Written(Arc<PolicySnapshot>),
    /// The last write failed (it is being retried): nobody should wait.
    Failing,
}

/// Programs the newest snapshot whenever it changes; a start-up resync and
/// a periodic one restore the table if someone flushed or edited it.
/// Never returns an error for bad data: a policy that cannot be rendered
/// is logged and skipped, the rest enforced. Nothing is written while the
/// snapshot is not `synced`. Returns when the sender is dropped, leaving
/// the table in place.
pub async fn run(snapshots: watch::Receiver<Arc<PolicySnapshot>>, cfg: PolicyDataplaneConfig) {
    run_reporting(snapshots, cfg, watch::channel(Programmed::Starting).0).await
}

/// [`run`], publishing on `programmed` each snapshot once it is in the
/// kernel.
pub async fn run_reporting(
    mut snapshots: watch::Receiver<Arc<PolicySnapshot>>,
    cfg: PolicyDataplaneConfig,
    programmed: watch::Sender<Programmed>,
) {
    let resync_every = cfg.resync_interval.max(Duration::from_millis(10));
    let (retry_min, retry_max) = (cfg.retry_min, cfg.retry_max.max(cfg.retry_min));
    let mut table = PolicyTable::new(cfg);
    let mut next_resync = tokio::time::Instant::now() + resync_every;
    // A failed write is retried after `backoff`.
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut backoff = retry_min;
    // The first synced snapshot is written as a full replace (the
    // start-up resync: whatever a previous felix left is replaced
    // atomically).
    let mut pending = true;
    loop {
        if pending {
            let snap = snapshots.borrow_and_update().clone();
            if snap.synced {
                let started = Instant::now();
                match table.apply(&snap).await {
                    Ok(how) => {
                        tracing::debug!(?how, elapsed = ?started.elapsed(), "policy table programmed");
                        programmed.send_replace(Programmed::Written(snap));
                        pending = false;
                        retry_at = None;
                        backoff = retry_min;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, retry_in = ?backoff, "cannot program the policy table");
                        programmed.send_replace(Programmed::Failing);
                        pending = false;
                        retry_at = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(retry_max);
                    }
                }
            } else {
                pending = false;
                tracing::debug!("policy snapshot not synced yet; the table is left as it is");
            }
        }
        let wake = retry_at.map_or(next_resync, |r| r.min(next_resync));
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    tracing::info!("policy source gone; the policy table stays as last written");
                    return;
                }
                pending = true;
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                if retry_at.is_some_and(|r| r <= now) {
                    retry_at = None;
                    pending = true;
                }
                if next_resync <= now {
                    next_resync = now + resync_every;
                    if retry_at.is_none() && !pending {
                        match table.resync().await {
                            Ok(Applied::InSync) => {}
                            Ok(how) => tracing::info!(?how, "policy table resynced"),
                            Err(e) => {
                                tracing::error!(error = %e, "policy table resync failed");
                                pending = true;
                            }
                        }
                    }
                }
            }
        }
    }
}
