//! Cross-process wake-ups for long polls: one Unix datagram socket per waiting receive.
//!
//! A waiter binds `<state>/doorbells/<queue>/<pid>-<n>.sock` *before* it looks at the
//! database, so a send that commits after the look still finds the socket and rings it.
//! Ringing sends one byte to every socket in the directory; sockets whose owner died
//! (connection refused) are removed on the way.
//!
//! A queue handle keeps the doorbells it bound ([`Doorbells`]) and lends one to each long
//! poll, instead of binding a socket per receive: a bound Unix socket is a file, and
//! creating and deleting one per receive made the filesystem allocate and free an inode
//! each time — with ext4 scanning past recently freed inodes on every allocation, that cost
//! a worker more CPU than its queue transactions did (`scripts/profile-stack`).

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram as StdDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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

/// A bound doorbell socket; the socket file is removed on drop.
#[derive(Debug)]
struct Bound {
    socket: StdDatagram,
    path: PathBuf,
}

impl Bound {
    /// Binds a new doorbell in `dir`. `None` when the path would be too long for a Unix
    /// socket or the directory is unusable.
    fn bind(dir: &Path) -> Option<Self> {
        let n = NEXT_BELL.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{}-{n}.sock", std::process::id()));
        if path.as_os_str().len() > MAX_SOCKET_PATH_BYTES {
            return None;
        }
        if std::fs::create_dir_all(dir).is_err() {
            return None;
        }
        let _ = std::fs::remove_file(&path);
        let socket = StdDatagram::bind(&path).ok()?;
        socket.set_nonblocking(true).ok()?;
        Some(Self { socket, path })
    }

    /// Discards the rings that came while nobody waited on this doorbell.
    fn drain(&self) {
        let mut buf = [0u8; 16];
        while self.socket.recv(&mut buf).is_ok() {}
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The doorbells of one queue handle: each long poll borrows one (binding a new one only
/// when all are in use) and gives it back when it ends.
#[derive(Debug)]
pub(super) struct Doorbells {
    dir: PathBuf,
    idle: Mutex<Vec<Bound>>,
}

impl Doorbells {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The directory senders ring.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A doorbell for one long poll, with no old rings in it. Take it *before* the first
    /// look at the database: a send committed after the look then finds it and rings it
    /// (a ring from before the look only costs a spurious wake-up). `None` when no socket
    /// can be bound (the caller then polls) or outside a tokio runtime.
    pub(super) fn take(&self) -> Option<Doorbell<'_>> {
        let reused = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let bound = match reused {
            Some(bound) => {
                bound.drain();
                bound
            }
            None => Bound::bind(&self.dir)?,
        };
        // Registered with the reactor of the runtime this receive runs on, and handed back
        // unregistered, so a handle can be used from any runtime.
        let socket = bound.socket.try_clone().ok()?;
        let socket = UnixDatagram::from_std(socket).ok()?;
        Some(Doorbell {
            socket,
            bound: Some(bound),
            owner: self,
        })
    }
}

/// A doorbell lent to one long poll; back to its [`Doorbells`] on drop.
#[derive(Debug)]
pub(super) struct Doorbell<'a> {
    socket: UnixDatagram,
    bound: Option<Bound>,
    owner: &'a Doorbells,
}

impl Doorbell<'_> {
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

impl Drop for Doorbell<'_> {
    fn drop(&mut self) {
        if let (Some(bound), Ok(mut idle)) = (self.bound.take(), self.owner.idle.lock()) {
            idle.push(bound);
        }
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
