//! Entry storage for the connection tracking table: one zeroed allocation
//! of fixed-size entries, handed out by index.
//!
//! Why not the global allocator: a new flow is the hot path of a busy node,
//! and `malloc` there costs a hundred-odd instructions plus writes of chunk
//! headers into cold memory, while removals free in bulk on another thread.
//! Here a new entry is one pop from a ring of recycled indices (or a bump of
//! the never-used mark), and nothing is ever returned to the allocator
//! until the table goes. Pages of the allocation are faulted in as entries
//! are first used, so an idle table of a large capacity costs address
//! space, not memory.
//!
//! Who does what:
//! * workers take entries ([`Slab::take`]) and give back the few they took
//!   but never published ([`Slab::give_back_unpublished`]: a Treiber push,
//!   linked through the entry itself);
//! * the control thread, under the table's removal lock, recycles entries
//!   whose epoch has passed ([`Slab::recycle`]): it is the only producer of
//!   the ring, and it drains the unpublished stack into it.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crossbeam::epoch::{self, Atomic, Shared};
use crossbeam::utils::CachePadded;

use super::Flow;

/// Fixed-capacity storage for [`Flow`] entries.
pub(super) struct Slab {
    base: NonNull<Flow>,
    capacity: usize,
    /// Entries `fresh..capacity` have never been handed out.
    fresh: CachePadded<AtomicUsize>,
    /// Recycled indices: a single-producer (control thread), multi-consumer
    /// (workers) ring. Positions only grow; `head <= tail <= head + ring.len()`.
    ring: Box<[AtomicU32]>,
    head: CachePadded<AtomicU64>,
    tail: CachePadded<AtomicU64>,
    /// Entries taken but never published, linked through `next[0]`.
    unpublished: Atomic<Flow>,
}

// SAFETY: the allocation behind `base` is owned by the slab and only
// reached through `&Slab`; every entry is either shared under the table's
// epoch rules (all its mutable state atomic) or owned by the one thread that
// took it, so moving or sharing the slab between threads is sound.
unsafe impl Send for Slab {}
// SAFETY: as for `Send`.
unsafe impl Sync for Slab {}

const _: () = assert!(
    !std::mem::needs_drop::<Flow>(),
    "entries are never dropped one by one"
);

impl Slab {
    /// Storage for `capacity` entries (at most `u32::MAX`).
    pub(super) fn new(capacity: usize) -> Slab {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        let layout = Layout::array::<Flow>(capacity).expect("conntrack capacity fits in memory");
        // SAFETY: the layout has a non-zero size. An all-zero `Flow` is a
        // valid value: null links, zero keys and counters, plain integers.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Flow>();
        let base = NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        let ring = (0..capacity.next_power_of_two())
            .map(|_| AtomicU32::new(0))
            .collect();
        Slab {
            base,
            capacity,
            fresh: CachePadded::new(AtomicUsize::new(0)),
            ring,
            head: CachePadded::new(AtomicU64::new(0)),
            tail: CachePadded::new(AtomicU64::new(0)),
            unpublished: Atomic::null(),
        }
    }

    /// Heap bytes held: the entry allocation and the ring.
    pub(super) fn bytes(&self) -> usize {
        self.capacity * std::mem::size_of::<Flow>() + self.ring.len() * 4
    }

    /// The entry at `index`.
    ///
    /// # Safety
    /// `index` must be below the capacity (an index this slab handed out).
    #[inline(always)]
    pub(super) unsafe fn ptr(&self, index: u32) -> *mut Flow {
        debug_assert!((index as usize) < self.capacity);
        // SAFETY: per the caller, the offset stays inside the allocation.
        unsafe { self.base.as_ptr().add(index as usize) }
    }

    /// The index of an entry of this slab.
    #[inline(always)]
    pub(super) fn index_of(&self, flow: *const Flow) -> u32 {
        let offset = (flow as usize - self.base.as_ptr() as usize) / std::mem::size_of::<Flow>();
        debug_assert!(offset < self.capacity);
        offset as u32
    }

    /// Takes an unused entry, fills it with `flow` and returns a pointer to
    /// it; `None` when every entry is in use or waiting to be recycled.
    #[inline]
    pub(super) fn take(&self, flow: Flow) -> Option<*mut Flow> {
        let index = self.pop_recycled().or_else(|| self.take_fresh())?;
        self.prefetch_next();
        // SAFETY: both sources only hold indices below the capacity.
        let entry = unsafe { self.ptr(index) };
        // SAFETY: an index from the ring or the fresh range is in no chain
        // of the table and no reader holds its entry (it was recycled only
        // after its epoch passed), so this thread owns the entry alone.
        unsafe { entry.write(flow) };
        Some(entry)
    }

    /// Starts loading the entry the next `take` will most likely hand out,
    /// so that writing it later finds it in cache (recycled entries are
    /// cold: they were last touched when their flow was alive).
    #[inline(always)]
    fn prefetch_next(&self) {
        let head = self.head.load(Ordering::Relaxed);
        let next = if head < self.tail.load(Ordering::Relaxed) {
            let mask = self.ring.len() as u64 - 1;
            self.ring[(head & mask) as usize].load(Ordering::Relaxed) as usize
        } else {
            self.fresh.load(Ordering::Relaxed)
        };
        if next < self.capacity {
            let entry = self.base.as_ptr().wrapping_add(next).cast::<u8>();
            super::prefetch(entry);
            super::prefetch(entry.wrapping_add(64));
        }
    }

    #[inline]
    fn pop_recycled(&self) -> Option<u32> {
        let mask = self.ring.len() as u64 - 1;
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            // `>=`, not `==`: a `head` newer than the `tail` this thread
            // sees (another consumer just took the last one) is empty too.
            if head >= self.tail.load(Ordering::Acquire) {
                return None;
            }
            // Cannot be overwritten before the CAS below: the producer only
            // writes position `head + ring.len()` once the ring holds more
            // distinct indices than there are entries, which it cannot; the
            // acquire/release on `head` orders this read before any later
            // consumer's pop, and so before the producer's next lap.
            let index = self.ring[(head & mask) as usize].load(Ordering::Relaxed);
            match self.head.compare_exchange_weak(
                head,
                head + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(index),
                Err(now) => head = now,
            }
        }
    }

    #[inline]
    fn take_fresh(&self) -> Option<u32> {
        if self.fresh.load(Ordering::Relaxed) >= self.capacity {
            return None;
        }
        let index = self.fresh.fetch_add(1, Ordering::Relaxed);
        (index < self.capacity).then_some(index as u32)
    }

    /// Returns an entry that `take` handed out.
    ///
    /// # Safety
    /// `entry` came from this slab's `take`, was never linked into the
    /// table (so no other thread has seen it) and is given back once.
    pub(super) unsafe fn give_back_unpublished(&self, entry: *mut Flow) {
        let guard = epoch::pin();
        let mine = Shared::from(entry as *const Flow);
        let mut head = self.unpublished.load(Ordering::Relaxed, &guard);
        loop {
            // SAFETY: the caller owns `entry` (taken, never published).
            unsafe { &*entry }.next[0].store(head, Ordering::Relaxed);
            match self.unpublished.compare_exchange(
                head,
                mine,
                Ordering::Release,
                Ordering::Relaxed,
                &guard,
            ) {
                Ok(_) => return,
                Err(e) => head = e.current,
            }
        }
    }

    /// Makes entries available again: `indices` and every entry given back
    /// unpublished.
    ///
    /// # Safety
    /// Only one thread at a time may call this (the table's removal lock),
    /// and every index is one this slab handed out, unlinked from the
    /// table, whose epoch has passed (no reader can hold it), and not
    /// already recycled.
    pub(super) unsafe fn recycle(&self, indices: impl IntoIterator<Item = u32>) {
        let guard = epoch::pin();
        let mask = self.ring.len() as u64 - 1;
        let mut tail = self.tail.load(Ordering::Relaxed);
        let mut push = |index: u32| {
            self.ring[(tail & mask) as usize].store(index, Ordering::Relaxed);
            tail += 1;
        };
        for index in indices {
            push(index);
        }
        let mut cur = self
            .unpublished
            .swap(Shared::null(), Ordering::Acquire, &guard);
        while !cur.is_null() {
            let entry = cur.as_raw();
            // SAFETY: entries on the unpublished stack are owned by it; the
            // swap above took the whole stack, so this thread owns them.
            cur = unsafe { &*entry }.next[0].load(Ordering::Relaxed, &guard);
            push(self.index_of(entry));
        }
        self.tail.store(tail, Ordering::Release);
    }
}

impl Drop for Slab {
    fn drop(&mut self) {
        let layout = Layout::array::<Flow>(self.capacity).expect("layout was valid at creation");
        // SAFETY: allocated in `new` with this layout; `&mut self` means no
        // entry is borrowed any more.
        unsafe { std::alloc::dealloc(self.base.as_ptr().cast(), layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn blank() -> Flow {
        // SAFETY: all-zero is a valid `Flow` (see `Slab::new`).
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn hands_out_each_entry_once_until_recycled() {
        let slab = Slab::new(100);
        let taken: Vec<u32> = (0..100)
            .map(|_| slab.index_of(slab.take(blank()).unwrap()))
            .collect();
        assert_eq!(taken.iter().collect::<HashSet<_>>().len(), 100);
        assert!(
            slab.take(blank()).is_none(),
            "a full slab hands out nothing"
        );
        // SAFETY (here and below): one thread; indices taken, never
        // linked anywhere, recycled or given back once.
        unsafe { slab.recycle(taken[10..20].iter().copied()) };
        let again: HashSet<u32> = (0..10)
            .map(|_| slab.index_of(slab.take(blank()).unwrap()))
            .collect();
        assert_eq!(again, taken[10..20].iter().copied().collect());
        assert!(slab.take(blank()).is_none());
        // Entries given back unpublished come back with the next recycle.
        unsafe {
            slab.give_back_unpublished(slab.ptr(taken[3]));
            slab.give_back_unpublished(slab.ptr(taken[4]));
        }
        assert!(slab.take(blank()).is_none());
        unsafe { slab.recycle([]) };
        let back: HashSet<u32> = (0..2)
            .map(|_| slab.index_of(slab.take(blank()).unwrap()))
            .collect();
        assert_eq!(back, [taken[3], taken[4]].into_iter().collect());
    }

    /// Four threads take entries until none is left; every index taken.
    fn take_all_on_four_threads(slab: &std::sync::Arc<Slab>) -> Vec<u32> {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let slab = slab.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    while let Some(e) = slab.take(blank()) {
                        mine.push(slab.index_of(e));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    }

    #[test]
    fn concurrent_takers_never_share_an_entry() {
        let slab = std::sync::Arc::new(Slab::new(20_000));
        // SAFETY (here and below): the test thread is the only recycler,
        // and every index was taken and is recycled once.
        unsafe { slab.recycle(std::iter::empty()) };
        let all = take_all_on_four_threads(&slab);
        assert_eq!(all.len(), 20_000);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 20_000);
        // Recycled by the control side, taken concurrently again.
        unsafe { slab.recycle(all.iter().copied()) };
        let again = take_all_on_four_threads(&slab);
        assert_eq!(again.len(), 20_000);
        assert_eq!(again.iter().collect::<HashSet<_>>().len(), 20_000);
    }
}
