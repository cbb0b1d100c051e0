//! The connection table of a listener: which connections are open, and which to close
//! when it is full (SPEC §3, "The tunnel is the internet").
//!
//! Every connection through the tunnel comes from the tunnel's own address, so limits per
//! address do nothing, and refusing newcomers when full (what a plain semaphore does)
//! hands the port to whoever opened connections first: 256 idle sockets used to stop
//! every push. Instead the table holds [`WEBHOOK_CONNECTIONS`], and a newcomer that finds
//! it full closes the connection that has gone longest without a complete request. A
//! push is answered within milliseconds of its connection opening, so it always counts as
//! recent; an idle or trickling connection only ages. An attacker who keeps a thousand
//! connections busy with complete requests gets answers, not a hold on the port.
//!
//! A connection is stamped when it is accepted and each time one of its requests has been
//! answered (the request was complete, or it was refused). The scan for the oldest is
//! linear; at 1,024 entries that is a few microseconds, only when the table is full.
//!
//! Memory: a full table of idle connections costs ~13 MiB (hyper's buffers). Bodies are
//! what could cost more: 1,024 connections each sending most of a 64 KiB body and then
//! stalling held 150 MB (measured), past the unit's `MemoryMax=`, so the kernel would
//! kill the daemon; with the pool the peak is 55 MB (release build). Real pushes are under 1 KiB, so each body may hold [`BODY_FREE`]
//! freely, and what any body holds beyond that comes from one [`BodyPool`]: a flood of
//! large bodies gets 503s, pushes are untouched.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections the webhook port holds (SPEC §3: at least 1,024).
///
/// What each costs: hyper reserves an 8 KiB read buffer (growing to `max_buf_size`,
/// 16 KiB) and an 8 KiB write buffer per connection, plus the task; an idle one touches
/// a few KiB of it (measured with 1,024 idle connections: see README "Bounded for a box
/// on the internet"). The unit's `MemoryMax=` is sized for all of them at once, each
/// with a body of the default `--max-body` in hand.
pub const WEBHOOK_CONNECTIONS: usize = 1024;
/// Connections the display port holds (a kiosk browser and a few screens on the LAN).
pub const DISPLAY_CONNECTIONS: usize = 64;
/// File descriptors besides connections: the database and its WAL (twice: the writer
/// and the display's reader), listeners, the journal, a printer, a hook's pipes.
const OTHER_FDS: usize = 64;

/// When a connection last did something that counts: opened, or had a request answered.
#[derive(Clone, Debug)]
pub struct Stamp {
    micros: Arc<AtomicU64>,
    epoch: Instant,
}

impl Stamp {
    /// Records that the connection did something just now.
    pub fn touch(&self) {
        let now = self.epoch.elapsed().as_micros() as u64;
        self.micros.store(now, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.micros.load(Ordering::Relaxed)
    }
}

/// The open connections of one listener, keyed by `K` (a task id), each with a handle
/// `H` that closes it (an abort handle).
pub struct Table<K, H> {
    capacity: usize,
    epoch: Instant,
    open: HashMap<K, (Stamp, H)>,
}

impl<K: Eq + Hash + Clone, H> Table<K, H> {
    pub fn new(capacity: usize) -> Table<K, H> {
        Table {
            capacity: capacity.max(1),
            epoch: Instant::now(),
            open: HashMap::with_capacity(capacity),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.open.len() >= self.capacity
    }

    /// A stamp for a connection accepted now.
    pub fn stamp(&self) -> Stamp {
        let s = Stamp {
            micros: Arc::new(AtomicU64::new(0)),
            epoch: self.epoch,
        };
        s.touch();
        s
    }

    pub fn insert(&mut self, key: K, stamp: Stamp, handle: H) {
        self.open.insert(key, (stamp, handle));
    }

    pub fn remove(&mut self, key: &K) {
        self.open.remove(key);
    }

    /// Takes out the connection that has gone longest without a complete request, with
    /// how long that has been.
    pub fn evict_oldest(&mut self) -> Option<(H, Duration)> {
        let key = self
            .open
            .iter()
            .min_by_key(|(_, (stamp, _))| stamp.get())
            .map(|(k, _)| k.clone())?;
        let (stamp, handle) = self.open.remove(&key)?;
        let now = self.epoch.elapsed().as_micros() as u64;
        Some((
            handle,
            Duration::from_micros(now.saturating_sub(stamp.get())),
        ))
    }
}

/// Bytes a request body may hold without drawing on the [`BodyPool`] (Douyin's are under
/// 1 KiB).
pub const BODY_FREE: usize = 4 * 1024;
/// Bytes all bodies together may hold beyond [`BODY_FREE`] each.
pub const BODY_POOL: usize = 8 * 1024 * 1024;

/// The memory that request bodies hold beyond [`BODY_FREE`] each, bounded.
#[derive(Debug)]
pub struct BodyPool {
    cap: usize,
    used: AtomicUsize,
}

impl BodyPool {
    pub fn new(cap: usize) -> BodyPool {
        BodyPool {
            cap,
            used: AtomicUsize::new(0),
        }
    }

    /// A share of the pool for one body, empty at first, given back when dropped.
    pub fn share(&self) -> Share<'_> {
        Share {
            pool: self,
            held: 0,
        }
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// What one body holds of a [`BodyPool`].
#[derive(Debug)]
pub struct Share<'a> {
    pool: &'a BodyPool,
    held: usize,
}

impl Share<'_> {
    /// Makes the share cover a buffer of `capacity` bytes; false if the pool has not
    /// that much left (the share is unchanged).
    pub fn cover(&mut self, capacity: usize) -> bool {
        let want = capacity.saturating_sub(BODY_FREE);
        if want <= self.held {
            return true;
        }
        let more = want - self.held;
        let taken = self
            .pool
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + more <= self.pool.cap).then_some(used + more)
            });
        if taken.is_ok() {
            self.held = want;
        }
        taken.is_ok()
    }
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        self.pool.used.fetch_sub(self.held, Ordering::Relaxed);
    }
}

/// Makes room for `connections` file descriptors if the soft `RLIMIT_NOFILE` is lower
/// (a shell's `ulimit -n` is often 1024; the unit sets `LimitNOFILE=`), up to the hard
/// limit. Returns how many connections the limit then allows, at most `connections`.
pub fn fit_fd_limit(connections: usize) -> usize {
    let want = (connections + OTHER_FDS) as libc::rlim_t;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the plain struct passed in.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    if got != 0 {
        return connections;
    }
    if lim.rlim_cur < want {
        let raised = libc::rlimit {
            rlim_cur: want.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above. It may fail (a seccomp filter): then the soft limit stays.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = raised.rlim_cur;
        }
    }
    (lim.rlim_cur as usize)
        .saturating_sub(OTHER_FDS)
        .min(connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_idle_longest_is_evicted_first() {
        let mut t: Table<u32, &str> = Table::new(3);
        let a = t.stamp();
        t.insert(1, a.clone(), "a");
        std::thread::sleep(Duration::from_millis(2));
        t.insert(2, t.stamp(), "b");
        std::thread::sleep(Duration::from_millis(2));
        t.insert(3, t.stamp(), "c");
        assert!(t.is_full());
        // "a" has a request answered: now "b" is the one idle longest.
        std::thread::sleep(Duration::from_millis(2));
        a.touch();
        let (h, idle) = t.evict_oldest().unwrap();
        assert_eq!(h, "b");
        assert!(idle >= Duration::from_millis(2), "{idle:?}");
        assert_eq!(t.len(), 2);
        assert!(!t.is_full());
        t.remove(&3);
        assert_eq!(t.evict_oldest().unwrap().0, "a");
        assert!(t.evict_oldest().is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn bodies_hold_their_first_kib_freely_and_the_rest_from_one_pool() {
        let pool = BodyPool::new(100_000);
        let mut a = pool.share();
        assert!(a.cover(BODY_FREE));
        assert_eq!(pool.used(), 0);
        assert!(a.cover(BODY_FREE + 60_000));
        let mut b = pool.share();
        assert!(!b.cover(BODY_FREE + 50_000), "only 40,000 left");
        assert!(b.cover(BODY_FREE + 40_000));
        assert_eq!(pool.used(), 100_000);
        drop(a);
        assert_eq!(pool.used(), 40_000);
        assert!(b.cover(BODY_FREE + 100_000));
        drop(b);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn the_fd_limit_allows_the_connections_it_can() {
        let n = fit_fd_limit(WEBHOOK_CONNECTIONS);
        assert!(n > 0 && n <= WEBHOOK_CONNECTIONS);
    }
}
