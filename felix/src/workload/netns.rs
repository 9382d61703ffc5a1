//! Running code inside a pod's network namespace.
//!
//! `setns(2)` moves only the calling thread, and a tokio worker must never
//! be moved, so each call gets a fresh OS thread that enters the namespace,
//! runs the closure and exits. Sockets the closure opens (netlink) and
//! sysctls it writes (`/proc/sys/net` resolves through the calling thread's
//! namespace) belong to the pod.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use tokio::sync::oneshot;

/// Runs `f` on a new thread inside the namespace `ns` and returns its
/// result without blocking the async caller.
pub(crate) async fn run_in<F, T>(ns: File, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("felix-netns".into())
        .spawn(move || {
            // SAFETY: setns on an open namespace fd changes only this
            // thread's network namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            let result = if rc == 0 {
                drop(ns);
                Ok(f())
            } else {
                Err(io::Error::last_os_error())
            };
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| io::Error::other("namespace thread ended without an answer"))?
}

/// `NS_GET_NSTYPE` from `<linux/nsfs.h>`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Checks that `ns` is a network namespace file (and not, say, a mount
/// namespace or a regular file), so a wrong CNI_NETNS fails with a clear
/// error before anything is created.
pub(crate) fn check_is_netns(ns: &File) -> io::Result<()> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
    let kind = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_NSTYPE) };
    if kind < 0 {
        return Err(io::Error::last_os_error());
    }
    if kind != libc::CLONE_NEWNET {
        return Err(io::Error::other(format!(
            "a namespace of type {kind:#x}, not a network namespace"
        )));
    }
    Ok(())
}
