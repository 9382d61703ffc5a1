//! The one way felix runs nftables, for every table it owns (the NAT table,
//! the policy table): a script as one transaction, and a table listed as
//! JSON.
//!
//! ```text
//!  Nft::new (caller's netns) ──► thread "nft" ── libnftables context (nft_ctx) ──► netlink
//!     run / list_table ── job + oneshot ──┘      or, when the library does not load:
//!                                                 `nft -f -` / `nft -j list` child processes
//! ```
//!
//! In-process is the fast path: a child `nft` costs 6–12 ms to start and
//! to read the kernel's whole ruleset into its cache before it does
//! anything, on every change; one long-lived context starts once. Debian
//! ships `libnftables.so.1` without the `.so` symlink or headers, so the
//! library is opened at run time (`dlopen`), and a node without it
//! falls back to the binary.
//!
//! The context opens its netlink socket when it is created, and a socket
//! belongs to the network namespace of the thread that opened it: each
//! [`Nft`] creates its context on a thread of its own, started from the
//! caller's thread (so in the caller's namespace, as a child process
//! would be), and every call runs there. A context is not thread-safe and
//! the library keeps some process-wide state, so calls into the library
//! are also serialised process-wide.

use std::ffi::{CStr, CString, c_char, c_int, c_uint};
use std::io;
use std::process::Stdio;
use std::sync::{Mutex, OnceLock, mpsc};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// The library's soname (Debian `libnftables1`).
const LIBRARY: &str = "libnftables.so.1";

/// A transaction this long (a whole table) is followed by a clean-up.
const BIG_JOB: usize = 64 * 1024;

/// `NFT_CTX_DEFAULT`: a context that talks to the kernel.
const NFT_CTX_DEFAULT: c_uint = 0;
/// `NFT_CTX_OUTPUT_JSON`, as in `nftables/libnftables.h`.
const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run `{cmd}`: {source} (install the nftables package)")]
    Spawn { cmd: String, source: io::Error },
    #[error("`{cmd}` failed: {stderr}")]
    Nft { cmd: String, stderr: String },
    #[error("`{cmd}` printed JSON felix cannot read: {error}")]
    Json { cmd: String, error: String },
    /// The context's thread is gone (it panicked); calls fall back to
    /// the binary.
    #[error("felix's nftables thread stopped (a bug: see the log for its panic)")]
    Gone,
}

/// How an [`Nft`] reaches the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// libnftables in this process.
    Library,
    /// A child `nft` process per call.
    Binary,
}

/// felix's nftables runner, bound to the network namespace of the thread
/// that created it. Cheap to keep; dropping it stops its thread.
#[derive(Debug)]
pub struct Nft {
    binary: String,
    library: Option<mpsc::Sender<Job>>,
}

impl Nft {
    /// libnftables when `prefer_library` and the library loads, else the
    /// `binary` (`nft`); logs which.
    pub fn new(binary: &str, prefer_library: bool) -> Nft {
        let library = if prefer_library {
            match spawn_context_thread() {
                Ok(tx) => Some(tx),
                Err(reason) => {
                    tracing::info!(%reason, nft = binary, "libnftables unavailable; running the nft binary per change");
                    None
                }
            }
        } else {
            None
        };
        if library.is_some() {
            tracing::info!(library = LIBRARY, "nftables in-process (libnftables)");
        }
        Nft {
            binary: binary.to_string(),
            library,
        }
    }

    pub fn backend(&self) -> Backend {
        if self.library.is_some() {
            Backend::Library
        } else {
            Backend::Binary
        }
    }

    /// Runs `script` (nft's own syntax, as `nft -f` reads it) as one
    /// transaction.
    pub async fn run(&self, script: &str) -> Result<(), NftError> {
        match &self.library {
            Some(tx) => {
                let cmd = "nft -f - (libnftables)";
                match call(tx, script.to_string(), false).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(stderr)) => Err(NftError::Nft {
                        cmd: cmd.into(),
                        stderr: short(&stderr),
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, "running the nft binary instead");
                        self.run_binary(script).await
                    }
                }
            }
            None => self.run_binary(script).await,
        }
    }

    /// `list table <family> <table>` as JSON, [`normalize`]d, or `None`
    /// if the table does not exist.
    pub async fn list_table(&self, family: &str, table: &str) -> Result<Option<Value>, NftError> {
        let (cmd, out) = match &self.library {
            Some(tx) => match call(tx, format!("list table {family} {table}"), true).await {
                Ok(out) => (
                    format!("nft -j list table {family} {table} (libnftables)"),
                    out,
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "running the nft binary instead");
                    self.list_binary(family, table).await?
                }
            },
            None => self.list_binary(family, table).await?,
        };
        let out = match out {
            Ok(out) => out,
            Err(stderr) if stderr.contains("No such file or directory") => return Ok(None),
            Err(stderr) => {
                return Err(NftError::Nft {
                    cmd,
                    stderr: stderr.trim().to_string(),
                });
            }
        };
        let v: Value = serde_json::from_str(&out).map_err(|e| NftError::Json {
            cmd,
            error: e.to_string(),
        })?;
        Ok(Some(normalize(&v)))
    }

    async fn run_binary(&self, script: &str) -> Result<(), NftError> {
        let cmd = format!("{} -f -", self.binary);
        let spawn_err = |source| NftError::Spawn {
            cmd: cmd.clone(),
            source,
        };
        let mut child = tokio::process::Command::new(&self.binary)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .await
                .map_err(spawn_err)?;
        }
        let out = child.wait_with_output().await.map_err(spawn_err)?;
        if !out.status.success() {
            return Err(NftError::Nft {
                cmd,
                stderr: short(&String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(())
    }

    /// The command line and its stdout, or its stderr when it failed.
    async fn list_binary(
        &self,
        family: &str,
        table: &str,
    ) -> Result<(String, Result<String, String>), NftError> {
        let cmd = format!("{} -j list table {family} {table}", self.binary);
        let out = tokio::process::Command::new(&self.binary)
            .args(["-j", "list", "table", family, table])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| NftError::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        let res = if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        };
        Ok((cmd, res))
    }
}

/// nft names the failing line and repeats the script around it; the first
/// lines say what was wrong.
fn short(stderr: &str) -> String {
    stderr
        .trim()
        .lines()
        .take(12)
        .collect::<Vec<_>>()
        .join("\n")
}

/// `nft -j list table` output without what changes on every write
/// (handles, the metainfo header), so two listings of the same content
/// compare equal.
pub fn normalize(listing: &Value) -> Value {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(k, _)| k.as_str() != "handle")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    let items = listing
        .get("nftables")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|i| i.get("metainfo").is_none())
                .map(strip)
                .collect()
        })
        .unwrap_or_default();
    Value::Array(items)
}

/// One command for the context thread: the text, JSON output or not, and
/// where the answer goes (stdout, or stderr on failure).
struct Job {
    text: String,
    json: bool,
    reply: oneshot::Sender<Result<String, String>>,
}

async fn call(
    tx: &mpsc::Sender<Job>,
    text: String,
    json: bool,
) -> Result<Result<String, String>, NftError> {
    let (reply, answer) = oneshot::channel();
    tx.send(Job { text, json, reply })
        .map_err(|_| NftError::Gone)?;
    answer.await.map_err(|_| NftError::Gone)
}

/// Starts the thread that owns one context (created there, in the
/// namespace this thread inherits from the caller); `Err` says why the
/// library cannot be used.
fn spawn_context_thread() -> Result<mpsc::Sender<Job>, String> {
    let api = api()?;
    let (tx, rx) = mpsc::channel::<Job>();
    let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<(), String>>(1);
    std::thread::Builder::new()
        .name("nft".into())
        .spawn(move || {
            let mut ctx = match Context::new(api) {
                Ok(ctx) => {
                    let _ = ready_tx.send(Ok(()));
                    ctx
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            while let Ok(job) = rx.recv() {
                let _ = job.reply.send(ctx.run(&job.text, job.json));
                if job.json || job.text.len() > BIG_JOB {
                    // A listing leaves the whole table, rules included,
                    // in the context's cache, and a big transaction its
                    // parse in this thread's malloc arena: felix would
                    // carry tens of MB for the rest of its life. A fresh
                    // context costs well under a millisecond; deltas only
                    // ever fetch chains and sets.
                    if let Ok(fresh) = Context::new(api) {
                        ctx = fresh;
                    }
                    // SAFETY: malloc_trim only returns free heap pages to
                    // the kernel; it takes no pointers.
                    #[cfg(target_env = "gnu")]
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    ready_rx
        .recv()
        .map_err(|_| "the nft thread stopped while starting".to_string())??;
    Ok(tx)
}

/// The library's functions (`nftables/libnftables.h`).
struct Api {
    ctx_new: unsafe extern "C" fn(c_uint) -> *mut NftCtx,
    ctx_free: unsafe extern "C" fn(*mut NftCtx),
    buffer_output: unsafe extern "C" fn(*mut NftCtx) -> c_int,
    buffer_error: unsafe extern "C" fn(*mut NftCtx) -> c_int,
    get_output: unsafe extern "C" fn(*mut NftCtx) -> *const c_char,
    get_error: unsafe extern "C" fn(*mut NftCtx) -> *const c_char,
    set_output_flags: unsafe extern "C" fn(*mut NftCtx, c_uint),
    run_cmd_from_buffer: unsafe extern "C" fn(*mut NftCtx, *const c_char) -> c_int,
}

/// `struct nft_ctx`, only ever behind a pointer.
#[repr(C)]
struct NftCtx {
    _opaque: [u8; 0],
}

/// Serialises every call into the library (it has process-wide state
/// besides the contexts).
static LIBRARY_LOCK: Mutex<()> = Mutex::new(());

/// The library, opened once per process (`Err`: why not).
fn api() -> Result<&'static Api, String> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| {
        // SAFETY: opening libnftables runs its ELF constructors; the
        // library is a plain C library (Debian's libnftables1) whose
        // initialisers only set up its own tables, and it is never
        // unloaded (leaked below), so no symbol outlives it.
        let lib = unsafe { libloading::Library::new(LIBRARY) }
            .map_err(|e| format!("cannot load {LIBRARY}: {e}"))?;
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));
        // SAFETY (every `sym` below): each type is that function's
        // prototype in libnftables.h (nftables 0.9.3 and later, where
        // nft_run_cmd_from_buffer lost its length argument).
        unsafe {
            Ok(Api {
                ctx_new: sym(lib, "nft_ctx_new")?,
                ctx_free: sym(lib, "nft_ctx_free")?,
                buffer_output: sym(lib, "nft_ctx_buffer_output")?,
                buffer_error: sym(lib, "nft_ctx_buffer_error")?,
                get_output: sym(lib, "nft_ctx_get_output_buffer")?,
                get_error: sym(lib, "nft_ctx_get_error_buffer")?,
                set_output_flags: sym(lib, "nft_ctx_output_set_flags")?,
                run_cmd_from_buffer: sym(lib, "nft_run_cmd_from_buffer")?,
            })
        }
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The function `name` of `lib`, as a `T`.
///
/// # Safety
/// `T` is the function's type in the library's header.
unsafe fn sym<T: Copy>(lib: &'static libloading::Library, name: &str) -> Result<T, String> {
    // SAFETY: the caller's contract for the type; `lib` is never
    // unloaded, so the pointer copied out stays valid.
    unsafe { lib.get::<T>(name) }
        .map(|s| *s)
        .map_err(|e| format!("{LIBRARY}: {e}"))
}

/// One libnftables context with buffered output and errors. Lives and
/// dies on the thread that made it (it is neither `Send` nor `Sync`: the
/// raw pointer keeps it so).
struct Context {
    api: &'static Api,
    ctx: *mut NftCtx,
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LIBRARY_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Context {
    fn new(api: &'static Api) -> Result<Context, String> {
        let _g = lock();
        // SAFETY: nft_ctx_new takes flags by value and returns an owned
        // context or NULL; calls into the library are serialised.
        let ctx = unsafe { (api.ctx_new)(NFT_CTX_DEFAULT) };
        if ctx.is_null() {
            return Err("nft_ctx_new failed (no netlink socket?)".into());
        }
        let ctx = Context { api, ctx };
        // SAFETY: `ctx.ctx` is a live context owned by `ctx`; buffering
        // replaces the stdout/stderr streams with memory ones it owns.
        let (o, e) = unsafe { ((api.buffer_output)(ctx.ctx), (api.buffer_error)(ctx.ctx)) };
        if o != 0 || e != 0 {
            return Err("nft_ctx_buffer_output/error failed".into());
        }
        Ok(ctx)
    }

    /// Runs `text`; its output, or its error output when it failed.
    fn run(&self, text: &str, json: bool) -> Result<String, String> {
        let Ok(c_text) = CString::new(text) else {
            return Err("an nft command with a NUL byte".into());
        };
        let _g = lock();
        // SAFETY: `self.ctx` is live (freed only in Drop); the buffer is
        // a NUL-terminated string that outlives the call; the returned
        // buffers are NUL-terminated strings owned by the context, valid
        // until its next call, and copied out before the lock is
        // released.
        unsafe {
            (self.api.set_output_flags)(self.ctx, if json { NFT_CTX_OUTPUT_JSON } else { 0 });
            let rc = (self.api.run_cmd_from_buffer)(self.ctx, c_text.as_ptr());
            // Both are read every time: reading rewinds each buffer.
            let out = text_of((self.api.get_output)(self.ctx));
            let err = text_of((self.api.get_error)(self.ctx));
            if rc == 0 {
                Ok(out)
            } else if err.trim().is_empty() {
                Err(format!("libnftables returned {rc} without a message"))
            } else {
                Err(err)
            }
        }
    }
}

/// # Safety
/// `p` is NULL or a NUL-terminated string.
unsafe fn text_of(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl Drop for Context {
    fn drop(&mut self) {
        let _g = lock();
        // SAFETY: the context is live and dropped once; nft_ctx_free
        // closes its socket and frees its buffers.
        unsafe { (self.api.ctx_free)(self.ctx) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_drops_handles_and_metainfo() {
        let a: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},{"table":{"family":"ip","name":"t","handle":3}},{"rule":{"chain":"c","handle":7,"expr":[{"masquerade":null}]}}]}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{"version":"1.0.6","json_schema_version":1}},{"table":{"family":"ip","name":"t","handle":9}},{"rule":{"chain":"c","handle":2,"expr":[{"masquerade":null}]}}]}"#,
        )
        .unwrap();
        assert_eq!(normalize(&a), normalize(&b));
        let c: Value = serde_json::from_str(
            r#"{"nftables":[{"table":{"family":"ip","name":"t","handle":9}}]}"#,
        )
        .unwrap();
        assert_ne!(normalize(&a), normalize(&c));
    }

    #[test]
    fn long_errors_keep_their_first_lines() {
        let e: String = (0..40).map(|i| format!("line {i}\n")).collect();
        assert_eq!(short(&e).lines().count(), 12);
    }
}
