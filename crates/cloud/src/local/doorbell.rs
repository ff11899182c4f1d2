//! Cross-process wake-ups for long polls: one Unix datagram socket per waiting receive.
//!
//! A waiter binds `<state>/doorbells/<queue>/<pid>-<n>.sock` *before* it looks at the
//! database, so a send that commits after the look still finds the socket and rings it.
//! Ringing sends one byte to every socket in the directory; sockets whose owner died
//! (connection refused) are removed on the way.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram as StdDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UnixDatagram;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_BYTES: usize = 107;

static NEXT_BELL: AtomicU64 = AtomicU64::new(0);

/// The doorbell directory of one queue.
pub(super) fn directory(root: &Path, queue: &str) -> PathBuf {
    root.join("doorbells").join(queue)
}

/// A bound doorbell; the socket file is removed on drop.
#[derive(Debug)]
pub(super) struct Doorbell {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Doorbell {
    /// Binds a new doorbell in `dir`. `None` when the path would be too long for a Unix
    /// socket or the directory is unusable; the caller then falls back to polling.
    pub(super) fn bind(dir: &Path) -> Option<Self> {
        let n = NEXT_BELL.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}.sock", std::process::id()));
        if path.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
            return None;
        }
        if std::fs::create_dir_all(dir).is_err() {
            return None;
        }
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).ok()?;
        Some(Self { socket, path })
    }

    /// Waits until rung or `timeout` passes; drains any extra rings.
    pub(super) async fn wait(&self, timeout: Duration) {
        let mut buf = [0u8; 16];
        if tokio::time::timeout(timeout, self.socket.recv(&mut buf))
            .await
            .is_ok()
        {
            while self.socket.try_recv(&mut buf).is_ok() {}
        }
    }
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Rings every doorbell in `dir`. Best effort: a missed ring costs at most one fallback
/// poll interval, never a message.
pub(super) fn ring(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let Ok(sender) = StdDatagram::unbound() else {
        return;
    };
    let _ = sender.set_nonblocking(true);
    for entry in entries.flatten() {
        let path = entry.path();
        match sender.send_to(b"!", &path) {
            Ok(_) => {}
            // The owner died without cleaning up.
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
                let _ = std::fs::remove_file(&path);
            }
            // WouldBlock: its buffer is full of rings, so it is awake already.
            Err(_) => {}
        }
    }
}
