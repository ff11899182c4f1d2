//! The waiter map: request id → the HTTP request waiting for that result.
//!
//! Waiting is event driven: an upload registers a oneshot sender under its request id
//! *before* its message is sent (so a fast answer cannot arrive unmatched), and the
//! listener completes it. The number of waiters is bounded by a semaphore: an upload that
//! finds no free slot is answered 503 at once instead of queueing without limit.
//!
//! A retried upload that names the id of a request this web tier already queued (its
//! `Idempotency-Key`) *joins* it: [`Waiters::enter`] adds one more sender under the id and
//! says the request needs no second message; the one result wakes every waiter.
//!
//! Finished results are also kept, bounded and oldest-first evicted, for
//! `GET /results/{id}`: a request that timed out, or whose client went away, can still be
//! looked up, and a duplicate response is just recorded again.
//!
//! Asynchronous requests (`POST /jobs`, batches) have no waiter: [`Waiters::accept`]
//! only remembers them as submitted, their result is recorded by [`Waiters::complete`] like
//! any result nobody waits for, and every result is also announced on a broadcast channel
//! ([`Waiters::subscribe`]) that long-polls and batch event streams listen to. A listener
//! that falls behind loses announcements, not results: it then looks in the output bucket.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

use iras_protocol::internal::Delivery;
use iras_protocol::{FileName, KeyScheme, RequestId, ResponseMessage};
use lru::LruCache;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, oneshot};

/// Results announced but not yet taken by the slowest listener before it lags.
const ANNOUNCED_RESULTS: usize = 4096;

/// What the web tier remembers of a request it queued: enough to find its result in the
/// output bucket once it has left memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The uploaded file's name.
    pub file_name: FileName,
    /// The key layout its result was written under.
    pub key_scheme: KeyScheme,
}

/// The state of a request id, as `GET /results/{id}` sees it.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Its result arrived.
    Finished(Arc<ResponseMessage>),
    /// Queued here, no result yet (the output bucket may already have it).
    Pending(Submitted),
    /// Not known to this process.
    Unknown,
}

/// Waiting requests and recent results. Shared by the handlers and the listener.
#[derive(Debug)]
pub struct Waiters {
    /// One permit per waiting request: bounds memory and tells overload early.
    slots: Arc<Semaphore>,
    max_waiting: usize,
    inner: Mutex<Inner>,
    /// Every result as it arrives, for long-polls and batch streams (no backpressure: a
    /// lagging receiver skips, and falls back to the output bucket).
    announced: broadcast::Sender<Arc<ResponseMessage>>,
}

#[derive(Debug)]
struct Inner {
    /// Every waiter of an id: the upload that queued it and any retries that joined it.
    waiting: HashMap<RequestId, Vec<oneshot::Sender<Arc<ResponseMessage>>>>,
    submitted: Recent<RequestId, Submitted>,
    finished: Recent<RequestId, Arc<ResponseMessage>>,
}

/// What [`Waiters::enter`] found for an id.
#[derive(Debug)]
pub enum Entered {
    /// Its result is already here: answer it, queue nothing.
    Finished(Arc<ResponseMessage>),
    /// Registered; `queue` says whether this upload must send the request (`false`: this
    /// web tier already queued the id, and the waiter joins that request).
    Waiting {
        /// Completed by the listener.
        waiter: Waiter,
        /// Whether to send the request message.
        queue: bool,
        /// What the upload that first queued the id submitted (`None` when `queue`).
        earlier: Option<Submitted>,
    },
}

/// A free waiting slot, held for the life of one upload.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// A registered waiter. Dropping it (answered, timed out, or the client went away)
/// removes the entry, so a later result is recorded instead of sent into the void.
#[derive(Debug)]
pub struct Waiter {
    id: RequestId,
    waiters: Arc<Waiters>,
    receiver: oneshot::Receiver<Arc<ResponseMessage>>,
    _slot: Slot,
}

impl Waiters {
    /// Room for `max_waiting` waiting requests and `results_kept` finished results.
    pub fn new(max_waiting: usize, results_kept: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_waiting)),
            max_waiting,
            inner: Mutex::new(Inner {
                waiting: HashMap::new(),
                submitted: Recent::new(results_kept),
                finished: Recent::new(results_kept),
            }),
            announced: broadcast::Sender::new(ANNOUNCED_RESULTS),
        }
    }

    /// Every result that arrives from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ResponseMessage>> {
        self.announced.subscribe()
    }

    /// Remembers an asynchronous request as submitted, with nobody waiting on it: its
    /// result will be recorded when it arrives.
    pub fn accept(&self, id: RequestId, submitted: Submitted) {
        self.lock().submitted.insert(id, submitted);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain maps behind, still consistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A waiting slot, or `None` when `max_waiting` requests already wait.
    pub fn try_slot(&self) -> Option<Slot> {
        self.slots
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|permit| Slot { _permit: permit })
    }

    /// Requests waiting right now.
    pub fn waiting(&self) -> usize {
        self.max_waiting - self.slots.available_permits()
    }

    /// Registers the waiter for `id`; call before sending its request.
    pub fn register(self: &Arc<Self>, id: RequestId, submitted: Submitted, slot: Slot) -> Waiter {
        let (sender, receiver) = oneshot::channel();
        let mut inner = self.lock();
        inner.waiting.entry(id).or_default().push(sender);
        inner.submitted.insert(id, submitted);
        drop(inner);
        Waiter {
            id,
            waiters: self.clone(),
            receiver,
            _slot: slot,
        }
    }

    /// For an upload with an id its client chose: the finished result if this web tier has
    /// it; else a waiter that joins the request if this web tier already queued the id
    /// (waiting or timed out, as long as it is remembered); else a fresh registration, as
    /// [`register`](Self::register). One critical section, so two uploads of one new id
    /// racing each other queue it once.
    pub fn enter(self: &Arc<Self>, id: RequestId, submitted: Submitted, slot: Slot) -> Entered {
        let mut inner = self.lock();
        if let Some(done) = inner.finished.get(&id) {
            return Entered::Finished(done.clone());
        }
        let earlier = inner.submitted.get(&id).cloned();
        let queue = earlier.is_none();
        let (sender, receiver) = oneshot::channel();
        inner.waiting.entry(id).or_default().push(sender);
        if queue {
            inner.submitted.insert(id, submitted);
        }
        drop(inner);
        Entered::Waiting {
            waiter: Waiter {
                id,
                waiters: self.clone(),
                receiver,
                _slot: slot,
            },
            queue,
            earlier,
        }
    }

    /// Forgets a request that was never queued (its send failed). Waiters that joined it
    /// see their sender dropped.
    pub fn forget(&self, id: RequestId) {
        let mut inner = self.lock();
        inner.waiting.remove(&id);
        inner.submitted.remove(&id);
    }

    /// Hands a result to its waiter, or records it when nobody waits.
    pub fn complete(&self, response: ResponseMessage) -> Delivery {
        let id = response.id;
        let response = Arc::new(response);
        let mut inner = self.lock();
        inner.finished.insert(id, response.clone());
        let senders = inner.waiting.remove(&id).unwrap_or_default();
        drop(inner);
        // Nobody listening is the common case, not an error.
        let _ = self.announced.send(response.clone());
        // Every waiter gets it (no short circuit): the first and the retries that joined.
        let mut delivered = false;
        for sender in senders {
            delivered |= sender.send(response.clone()).is_ok();
        }
        if delivered {
            Delivery::Delivered
        } else {
            Delivery::Recorded
        }
    }

    /// What is known about `id`.
    pub fn lookup(&self, id: RequestId) -> Lookup {
        let inner = self.lock();
        if let Some(done) = inner.finished.get(&id) {
            return Lookup::Finished(done.clone());
        }
        match inner.submitted.get(&id) {
            Some(s) => Lookup::Pending(s.clone()),
            None => Lookup::Unknown,
        }
    }
}

impl Lookup {
    /// Whether this web tier knows nothing of the id.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Self::Unknown)
    }
}

impl Waiter {
    /// The request id waited for.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Waits for the result. `None` if the web tier dropped the sender: the request this
    /// waiter joined could not be queued ([`Waiters::forget`]).
    pub async fn result(&mut self) -> Option<Arc<ResponseMessage>> {
        (&mut self.receiver).await.ok()
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        // Closing our receiver marks our sender closed; drop just that one, and the entry
        // once no waiter of the id is left.
        self.receiver.close();
        let mut inner = self.waiters.lock();
        if let Some(senders) = inner.waiting.get_mut(&self.id) {
            senders.retain(|s| !s.is_closed());
            if senders.is_empty() {
                inner.waiting.remove(&self.id);
            }
        }
    }
}

/// A map that keeps at most `capacity` entries, evicting the oldest insertion first.
///
/// An [`LruCache`] kept in insertion order: lookups `peek` (no promotion) and a key
/// inserted again has its value replaced in place, so "least recently used" is "inserted
/// longest ago". Unbounded to the cache itself, with the cap applied here, because
/// `LruCache::new` allocates its whole capacity up front (`results_kept` may be large).
#[derive(Debug)]
struct Recent<K: Hash + Eq, V> {
    capacity: usize,
    map: LruCache<K, V>,
}

impl<K: Hash + Eq + Copy, V> Recent<K, V> {
    fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            map: LruCache::unbounded(),
        }
    }

    fn insert(&mut self, key: K, value: V) {
        if let Some(old) = self.map.peek_mut(&key) {
            *old = value;
            return;
        }
        self.map.push(key, value);
        while self.map.len() > self.capacity {
            self.map.pop_lru();
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.map.peek(key)
    }

    fn remove(&mut self, key: &K) {
        self.map.pop(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iras_protocol::{Outcome, Timings};

    fn response(id: RequestId, label: &str) -> ResponseMessage {
        ResponseMessage::new(
            id,
            FileName::parse("test_0.JPEG").unwrap(),
            Outcome::Label {
                label: label.into(),
                score: 0.9,
                top_k: vec![],
            },
            "w",
            Timings::default(),
        )
    }

    fn submitted() -> Submitted {
        Submitted {
            file_name: FileName::parse("test_0.JPEG").unwrap(),
            key_scheme: KeyScheme::FileName,
        }
    }

    #[tokio::test]
    async fn a_registered_waiter_gets_its_result_and_later_duplicates_are_recorded() {
        let w = Arc::new(Waiters::new(4, 10));
        let id = RequestId::new();
        let mut waiter = w.register(id, submitted(), w.try_slot().unwrap());
        assert!(matches!(w.lookup(id), Lookup::Pending(_)));
        assert_eq!(w.complete(response(id, "cat")), Delivery::Delivered);
        assert_eq!(waiter.result().await.unwrap().outcome.label(), Some("cat"));
        assert_eq!(w.complete(response(id, "cat")), Delivery::Recorded);
        assert!(matches!(w.lookup(id), Lookup::Finished(r) if r.outcome.label() == Some("cat")));
    }

    #[tokio::test]
    async fn a_retry_with_a_known_id_joins_instead_of_queueing_again() {
        let w = Arc::new(Waiters::new(4, 10));
        let id = RequestId::new();
        let Entered::Waiting {
            waiter: mut first,
            queue: true,
            earlier: None,
        } = w.enter(id, submitted(), w.try_slot().unwrap())
        else {
            panic!("a new id is queued")
        };
        let Entered::Waiting {
            waiter: mut second,
            queue: false,
            earlier: Some(earlier),
        } = w.enter(id, submitted(), w.try_slot().unwrap())
        else {
            panic!("a known id is joined")
        };
        assert_eq!(earlier, submitted());
        // A third joiner that gives up does not take the others' senders with it.
        let Entered::Waiting { waiter: third, .. } =
            w.enter(id, submitted(), w.try_slot().unwrap())
        else {
            panic!("joined")
        };
        drop(third);
        assert_eq!(w.waiting(), 2);
        assert_eq!(w.complete(response(id, "cat")), Delivery::Delivered);
        assert_eq!(first.result().await.unwrap().outcome.label(), Some("cat"));
        assert_eq!(second.result().await.unwrap().outcome.label(), Some("cat"));
        // Once finished, the id is answered from memory.
        assert!(
            matches!(w.enter(id, submitted(), w.try_slot().unwrap()), Entered::Finished(r) if r.outcome.label() == Some("cat"))
        );
    }

    #[tokio::test]
    async fn joiners_of_a_request_that_was_never_queued_are_told() {
        let w = Arc::new(Waiters::new(4, 10));
        let id = RequestId::new();
        let Entered::Waiting { waiter: first, .. } =
            w.enter(id, submitted(), w.try_slot().unwrap())
        else {
            panic!("queued")
        };
        let Entered::Waiting {
            waiter: mut joined, ..
        } = w.enter(id, submitted(), w.try_slot().unwrap())
        else {
            panic!("joined")
        };
        w.forget(id);
        drop(first);
        assert!(joined.result().await.is_none());
    }

    #[test]
    fn slots_are_bounded_and_returned_when_a_waiter_drops() {
        let w = Arc::new(Waiters::new(2, 10));
        let a = w.register(RequestId::new(), submitted(), w.try_slot().unwrap());
        let _b = w.register(RequestId::new(), submitted(), w.try_slot().unwrap());
        assert_eq!(w.waiting(), 2);
        assert!(w.try_slot().is_none());
        let id = a.id();
        drop(a);
        assert_eq!(w.waiting(), 1);
        assert!(w.try_slot().is_some());
        // The dropped waiter's result is recorded, not lost.
        assert_eq!(w.complete(response(id, "dog")), Delivery::Recorded);
        assert!(matches!(w.lookup(id), Lookup::Finished(_)));
    }

    #[tokio::test]
    async fn an_accepted_request_is_pending_and_its_result_is_recorded_and_announced() {
        let w = Waiters::new(1, 10);
        let id = RequestId::new();
        assert!(w.lookup(id).is_unknown());
        w.accept(id, submitted());
        assert!(matches!(w.lookup(id), Lookup::Pending(_)));
        let mut announced = w.subscribe();
        assert_eq!(w.complete(response(id, "cat")), Delivery::Recorded);
        assert_eq!(announced.recv().await.unwrap().id, id);
        assert!(matches!(w.lookup(id), Lookup::Finished(r) if r.outcome.label() == Some("cat")));
        // No waiting slot was taken.
        assert!(w.try_slot().is_some());
    }

    #[test]
    fn unknown_ids_and_evicted_results() {
        let w = Waiters::new(1, 2);
        let ids: Vec<_> = (0..3).map(|_| RequestId::new()).collect();
        for id in &ids {
            w.complete(response(*id, "x"));
        }
        assert!(matches!(w.lookup(ids[0]), Lookup::Unknown));
        assert!(matches!(w.lookup(ids[2]), Lookup::Finished(_)));
    }

    #[test]
    fn recent_map_stays_bounded_under_churn() {
        let mut r = Recent::new(3);
        for i in 0..100u32 {
            r.insert(i, i);
            if i % 2 == 0 {
                r.remove(&i);
            }
        }
        assert!(r.map.len() <= 3);
        assert_eq!(r.get(&99), Some(&99));
    }

    #[test]
    fn recent_map_evicts_by_insertion_not_by_use() {
        let mut r = Recent::new(2);
        r.insert(1, "a");
        r.insert(2, "b");
        // Neither a lookup nor a second insert moves 1 to the back.
        assert_eq!(r.get(&1), Some(&"a"));
        r.insert(1, "a again");
        r.insert(3, "c");
        assert_eq!(r.get(&1), None);
        assert_eq!((r.get(&2), r.get(&3)), (Some(&"b"), Some(&"c")));
    }
}
