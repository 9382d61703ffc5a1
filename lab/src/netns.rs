//! Network namespaces, veth pairs and processes inside namespaces.
//!
//! Everything shells out to iproute2 (`ip netns ...`), the same tool an
//! operator would use to look at what the lab built, except [`Netns::run`],
//! which moves one OS thread into the namespace with `setns(2)` so Rust code
//! (a netlink socket, a BGP listener) opens its sockets there.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;

/// Every lab namespace name starts with this, so the lab (and
/// [`sweep_stale`]) never touches a namespace it did not make.
pub const NAME_PREFIX: &str = "cl";

const NETNS_DIR: &str = "/run/netns";

static SEQ: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{cmd}` could not be started: {source} (is iproute2 installed and are you root?)")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("namespace tag {0:?} must be 1-8 characters of [a-z0-9]")]
    BadTag(String),
    #[error("cannot enter namespace {name}: {source}")]
    Enter {
        name: String,
        source: std::io::Error,
    },
    #[error("lab topology: {0}")]
    Topology(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn render(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command to completion; returns its stdout, or an error carrying
/// the command line and stderr.
pub(crate) fn run_cmd(program: &str, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            cmd: render(program, args),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: render(program, args),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace made by the lab. Dropping it kills every process
/// still inside and deletes it (and with it every interface it holds).
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Left in place on drop (a `calico-lab up` cluster outlives the
    /// process that built it).
    keep: AtomicBool,
}

impl Netns {
    /// Creates a fresh namespace named `cl<tag>-<pid>-<seq>` with `lo` up.
    pub fn create(tag: &str) -> Result<Netns, LabError> {
        if tag.is_empty()
            || tag.len() > 8
            || !tag
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(LabError::BadTag(tag.to_string()));
        }
        let name = format!(
            "{NAME_PREFIX}{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        Netns::create_named(&name)
    }

    /// Creates a namespace with exactly this name (`[A-Za-z0-9_.-]`, at most
    /// 64 characters), `lo` up. Like every lab namespace it is deleted on
    /// drop unless [`Netns::keep`] was called.
    pub fn create_named(name: &str) -> Result<Netns, LabError> {
        check_name(name)?;
        run_cmd("ip", &["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
            keep: AtomicBool::new(false),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on an existing namespace that is never deleted by it.
    pub fn existing(name: &str) -> Result<Netns, LabError> {
        check_name(name)?;
        if !Path::new(NETNS_DIR).join(name).exists() {
            return Err(LabError::Topology(format!(
                "no network namespace {name} (is the lab up?)"
            )));
        }
        Ok(Netns {
            name: name.to_string(),
            keep: AtomicBool::new(true),
        })
    }

    /// Leaves the namespace (and what runs in it) in place when this
    /// handle drops.
    pub fn keep(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, for tools that take a netns path (CNI_NETNS).
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// `ip -n <ns> <args>`.
    pub fn ip(&self, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    /// Runs `program args` inside the namespace and returns its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["netns", "exec", self.name.as_str(), program];
        full.extend_from_slice(args);
        run_cmd("ip", &full)
    }

    /// A `Command` that runs `program` inside the namespace, for callers that
    /// need to control stdio themselves.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Sets a sysctl inside the namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")])
            .map(|_| ())
    }

    /// Starts a long-running process inside the namespace, stdout and stderr
    /// appended to `log` (or discarded). It is killed when the returned
    /// handle drops.
    pub fn spawn(
        &self,
        program: &str,
        args: &[&str],
        log: Option<&Path>,
    ) -> Result<NsProcess, LabError> {
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        match log {
            Some(path) => {
                let f = File::options()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| LabError::Io {
                        path: path.to_owned(),
                        source,
                    })?;
                let f2 = f.try_clone().map_err(|source| LabError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                cmd.stdout(f).stderr(f2);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            cmd: render(program, args),
            source,
        })?;
        Ok(NsProcess {
            child,
            what: render(program, args),
        })
    }

    /// Runs `f` on a new OS thread that has entered this namespace, and
    /// waits for it. Sockets `f` opens (netlink, TCP) belong to the
    /// namespace. A panic in `f` is re-raised here.
    pub fn run<F, R>(&self, f: F) -> Result<R, LabError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let handle = self.spawn_thread(f)?;
        match handle.join() {
            Ok(r) => Ok(r),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Like [`Netns::run`] but returns at once with the thread's handle, for
    /// daemons that live as long as the test.
    pub fn spawn_thread<F, R>(&self, f: F) -> Result<JoinHandle<R>, LabError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = self.path();
        let file = File::open(&path).map_err(|source| LabError::Enter {
            name: self.name.clone(),
            source,
        })?;
        let name = self.name.clone();
        let (tx, rx) = std::sync::mpsc::channel::<Result<(), std::io::Error>>();
        let handle = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                // SAFETY: setns on a valid, open namespace fd only changes
                // this thread's network namespace; no memory is involved.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    let _ = tx.send(Err(std::io::Error::last_os_error()));
                    // The caller sees the error and never joins a result.
                    std::process::abort();
                }
                drop(file);
                let _ = tx.send(Ok(()));
                f()
            })
            .map_err(|source| LabError::Enter {
                name: self.name.clone(),
                source,
            })?;
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(source)) => Err(LabError::Enter { name, source }),
            Err(_) => Err(LabError::Enter {
                name,
                source: std::io::Error::other("namespace thread died before entering"),
            }),
        }
    }

    /// The PIDs of processes inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        run_cmd("ip", &["netns", "pids", &self.name])
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep.load(Ordering::Relaxed) {
            delete_namespace(&self.name);
        }
    }
}

fn check_name(name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(LabError::BadTag(format!(
            "{name} (a namespace name is 1-64 characters of [A-Za-z0-9_.-])"
        )))
    }
}

/// The names of every network namespace in `/run/netns`.
pub fn list_namespaces() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Kills every process inside namespace `name` (SIGKILL), waits (bounded)
/// for them to be gone, then deletes the namespace. Returns the pids it
/// killed. Deleting a namespace that still holds processes would only
/// unname it: it lives on as long as they do.
pub fn delete_namespace(name: &str) -> Vec<i32> {
    let pids: Vec<i32> = run_cmd("ip", &["netns", "pids", name])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect()
        })
        .unwrap_or_default();
    for &pid in &pids {
        // SAFETY: kill(2) with a pid taken from the namespace listing.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while pids.iter().any(|p| process_alive(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if let Err(e) = run_cmd("ip", &["netns", "del", name]) {
        tracing::warn!(netns = name, error = %e, "could not delete namespace");
    }
    pids
}

/// Whether `pid` is a live (not zombie) process.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Removes lab namespaces whose creating process no longer exists (left by
/// a test run that was killed before its destructors ran). Returns how many.
pub fn sweep_stale() -> usize {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return 0;
    };
    let mut removed = 0;
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let parts: Vec<&str> = rest.rsplitn(3, '-').collect();
        // rsplitn yields seq, pid, tag.
        let [_seq, pid, _tag] = parts[..] else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            delete_namespace(&name);
            removed += 1;
        }
    }
    removed
}

/// Creates a veth pair with one end in each namespace (`a_if` in `a`,
/// `b_if` in `b`), both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<(), LabError> {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// A process running inside a namespace; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct NsProcess {
    child: Child,
    what: String,
}

impl NsProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (and with what), without waiting.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, sig: i32) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Kills the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn describe(&self) -> &str {
        &self.what
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
