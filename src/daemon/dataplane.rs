//! The data plane: worker threads moving packets between TUN devices and
//! the [`Router`].
//!
//! Each TUN descriptor belongs to exactly one worker, which polls it with
//! `mio` (edge-triggered), reads every waiting packet (until `EAGAIN`), runs
//! it through its [`crate::packet::router::Worker`] and writes it to the
//! device the verdict names. Descriptors are handed to workers round robin.
//! The control plane reaches workers only through the router's snapshots and
//! a command channel (add or remove a device), never a lock on the packet
//! path.
//!
//! A link is one device with one or more queues ([`LinkQueues`]): a pod's
//! `eth0` has one, so one worker serves the pod; the host device `podnet0`
//! has one per worker (`IFF_MULTI_QUEUE`). A worker writes to a link on the
//! queue it reads of that link, if it reads one: the kernel learns from
//! those writes which queue a flow lives on and hands the flow's next
//! packets from the host to that queue, so both directions of a flow
//! between the host and a pod meet in the worker that serves the pod, and
//! flows of pods on different workers run in parallel.
//!
//! Offloads: a device with offloads reads a packet with its virtio-net
//! header, which travels with the packet through the router
//! ([`PacketBuf::vnet`]). Writing, a super-packet or partial checksum goes
//! out whole to a device that takes it; to one that does not (offloads off,
//! or a USO packet to a device without USO) it is finished in software: the
//! checksum completed, a super-packet cut into segments
//! ([`crate::packet::wire::gso`]). Each worker owns its buffers, allocated
//! once: the packet (room for a 64 KiB super-packet) and one segment.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam::channel::{unbounded, Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::packet::wire::gso::Segmenter;
use crate::packet::wire::virtio::{self, VnetHdr};
use crate::packet::{wire, Link, PacketBuf, Router, Timestamp, Verdict};
use crate::sys::tun::{Tun, VNET_HDR_LEN};

/// The queues of one link's device: one descriptor each (see the module
/// docs). A single device converts into one queue.
pub struct LinkQueues(Vec<Arc<Tun>>);

impl LinkQueues {
    /// The queues, the first one first.
    pub fn queues(&self) -> &[Arc<Tun>] {
        &self.0
    }
}

impl From<Arc<Tun>> for LinkQueues {
    fn from(tun: Arc<Tun>) -> LinkQueues {
        LinkQueues(vec![tun])
    }
}

impl From<Vec<Arc<Tun>>> for LinkQueues {
    fn from(queues: Vec<Arc<Tun>>) -> LinkQueues {
        LinkQueues(queues)
    }
}

impl From<Vec<Tun>> for LinkQueues {
    fn from(queues: Vec<Tun>) -> LinkQueues {
        LinkQueues(queues.into_iter().map(Arc::new).collect())
    }
}

/// A link as the workers write to it.
#[derive(Clone)]
struct LinkEntry {
    queues: Arc<[Arc<Tun>]>,
    /// For each worker, the queue it writes on: the one it reads, or
    /// another spread by worker index if it reads none.
    by_worker: Arc<[usize]>,
    /// For each queue, the worker reading it.
    serving: Arc<[usize]>,
}

impl LinkEntry {
    fn queue(&self, worker: usize) -> &Arc<Tun> {
        &self.queues[self.by_worker.get(worker).copied().unwrap_or(0)]
    }

    fn served_by(&self, worker: usize) -> bool {
        self.serving.contains(&worker)
    }
}

/// Every device a verdict can name.
#[derive(Default)]
struct LinkTable {
    host: Option<LinkEntry>,
    pods: HashMap<u32, LinkEntry>,
}

impl LinkTable {
    fn entry(&self, link: Link) -> Option<&LinkEntry> {
        match link {
            Link::Host => self.host.as_ref(),
            Link::Pod(id) => self.pods.get(&id.0),
        }
    }

    /// The queue of `link` that `worker` writes on.
    fn get(&self, link: Link, worker: usize) -> Option<&Arc<Tun>> {
        Some(self.entry(link)?.queue(worker))
    }
}

enum Command {
    Add(Link, Arc<Tun>),
    Remove(Link),
    Stop,
}

struct WorkerHandle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

/// Packets the workers could not deliver (the output device was gone or
/// full), for the daemon's counters.
#[derive(Default)]
pub struct DataplaneStats {
    /// Writes that failed.
    pub write_errors: AtomicU64,
    /// Reads that failed with something other than "no more packets".
    pub read_errors: AtomicU64,
    /// Super-packets cut into segments in software, for a device that
    /// cannot take them whole.
    pub segmented: AtomicU64,
    /// Partial checksums finished in software, for such a device.
    pub checksums_finished: AtomicU64,
    /// Packets with an offload state that could not be finished or
    /// segmented (dropped).
    pub offload_errors: AtomicU64,
    /// Packets from the host that a worker forwarded to a pod another
    /// worker serves: the kernel had not (yet) learned to hand their flow
    /// to the queue of the pod's worker (a flow's first packets, or a
    /// steering fault).
    pub host_unsteered: AtomicU64,
}

/// The running workers.
pub struct Dataplane {
    router: Arc<Router>,
    links: Arc<ArcSwap<LinkTable>>,
    workers: Vec<WorkerHandle>,
    /// The workers serving each link's queues, in queue order.
    owner: parking_lot::Mutex<HashMap<Link, Vec<usize>>>,
    /// Links removed from the workers but still in the published table
    /// (see [`Dataplane::remove`]).
    unpublished: parking_lot::Mutex<Vec<Link>>,
    next: AtomicUsize,
    clock: Instant,
    stats: Arc<DataplaneStats>,
}

const WAKER: Token = Token(usize::MAX);

/// The most removals left unpublished (see [`Dataplane::remove`]).
pub const UNPUBLISHED_MAX: usize = 256;

impl Dataplane {
    /// Starts `workers` threads. `clock` is the daemon's time origin (the
    /// same one its conntrack sweeps use).
    pub fn start(router: Arc<Router>, workers: usize, clock: Instant) -> io::Result<Dataplane> {
        let links: Arc<ArcSwap<LinkTable>> = Arc::new(ArcSwap::from_pointee(LinkTable::default()));
        let stats = Arc::new(DataplaneStats::default());
        let mut handles = Vec::new();
        for i in 0..workers.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = unbounded();
            let router = router.clone();
            let links = links.clone();
            let stats = stats.clone();
            let thread = std::thread::Builder::new()
                .name(format!("podnet-worker-{i}"))
                .spawn(move || worker_loop(i, poll, rx, &router, &links, clock, &stats))?;
            handles.push(WorkerHandle {
                commands: tx,
                waker,
                thread: Some(thread),
            });
        }
        Ok(Dataplane {
            router,
            links,
            workers: handles,
            owner: parking_lot::Mutex::new(HashMap::new()),
            unpublished: parking_lot::Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
            clock,
            stats,
        })
    }

    /// Counters of the workers' IO errors.
    pub fn stats(&self) -> &DataplaneStats {
        &self.stats
    }

    /// How many worker threads run: a multi-queue device gets this many
    /// queues (one each).
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Starts moving packets of `device` (one queue, or several of a
    /// multi-queue device) as `link`, in place of whatever served `link`
    /// before. Each queue goes to the next worker round robin.
    pub fn add(&self, link: Link, device: impl Into<LinkQueues>) {
        let queues = device.into().0;
        if queues.is_empty() {
            return self.remove(link);
        }
        let n = self.workers.len();
        let start = self.next.fetch_add(queues.len(), Ordering::Relaxed);
        let serving: Vec<usize> = (0..queues.len()).map(|q| (start + q) % n).collect();
        let by_worker: Vec<usize> = (0..n)
            .map(|w| {
                serving
                    .iter()
                    .position(|&s| s == w)
                    .unwrap_or(w % queues.len())
            })
            .collect();
        self.publish_link(
            link,
            Some(LinkEntry {
                queues: queues.clone().into(),
                by_worker: by_worker.into(),
                serving: serving.clone().into(),
            }),
        );
        let mut owner = self.owner.lock();
        // Old queues go before new ones arrive: a worker's commands are
        // handled in order.
        for w in owner.insert(link, serving.clone()).unwrap_or_default() {
            self.send(w, Command::Remove(link));
        }
        for (tun, w) in queues.into_iter().zip(serving) {
            self.send(w, Command::Add(link, tun));
        }
    }

    /// Stops moving packets of `link`: its workers let go of its device at
    /// once. The published link table (which writes toward the link read)
    /// drops it with the next publication: removals are published in
    /// batches of [`UNPUBLISHED_MAX`], by [`Dataplane::flush`], or with the
    /// next [`Dataplane::add`] (copying the table once per removal made
    /// deleting every pod quadratic in their number). Until then a packet
    /// routed to the link is still written to its device, which is open
    /// and harmless: its pod is gone.
    pub fn remove(&self, link: Link) {
        for w in self.owner.lock().remove(&link).unwrap_or_default() {
            self.send(w, Command::Remove(link));
        }
        let mut pending = self.unpublished.lock();
        pending.push(link);
        if pending.len() >= UNPUBLISHED_MAX {
            let links = std::mem::take(&mut *pending);
            self.publish(&links, None);
        }
    }

    /// Publishes the removals [`Dataplane::remove`] has not published yet.
    pub fn flush(&self) {
        let links = std::mem::take(&mut *self.unpublished.lock());
        if !links.is_empty() {
            self.publish(&links, None);
        }
    }

    /// Publishes a link table without the unpublished removals, with `link`
    /// set to `entry`.
    fn publish_link(&self, link: Link, entry: Option<LinkEntry>) {
        let removed = std::mem::take(&mut *self.unpublished.lock());
        self.publish(&removed, Some((link, entry)));
    }

    /// Publishes a link table without `removed`, then with `set` applied.
    fn publish(&self, removed: &[Link], set: Option<(Link, Option<LinkEntry>)>) {
        self.links.rcu(|t| {
            let mut n = LinkTable {
                host: t.host.clone(),
                pods: t.pods.clone(),
            };
            let changes = removed
                .iter()
                .map(|l| (*l, None))
                .chain(set.iter().cloned());
            for (link, entry) in changes {
                match (link, entry) {
                    (Link::Host, entry) => n.host = entry,
                    (Link::Pod(id), Some(entry)) => {
                        n.pods.insert(id.0, entry);
                    }
                    (Link::Pod(id), None) => {
                        n.pods.remove(&id.0);
                    }
                }
            }
            n
        });
    }

    /// Writes a packet the control plane generated (a TCP RST for a flow
    /// whose backend went away) out of `link`.
    pub fn send_packet(&self, link: Link, packet: &[u8]) {
        if let Some(tun) = self.links.load().get(link, 0) {
            if tun.write(packet).is_err() {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The time the fast path uses now.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.clock.elapsed().as_millis() as u64)
    }

    /// The router the workers feed.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    fn send(&self, worker: usize, cmd: Command) {
        let w = &self.workers[worker];
        if w.commands.send(cmd).is_ok() {
            let _ = w.waker.wake();
        }
    }

    /// Stops every worker and waits for them.
    pub fn stop(&mut self) {
        for i in 0..self.workers.len() {
            self.send(i, Command::Stop);
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.stop();
    }
}

fn worker_loop(
    index: usize,
    mut poll: Poll,
    commands: Receiver<Command>,
    router: &Router,
    links: &ArcSwap<LinkTable>,
    clock: Instant,
    stats: &DataplaneStats,
) {
    let mut events = Events::with_capacity(256);
    let mut devices: HashMap<Token, (Link, Arc<Tun>)> = HashMap::new();
    let mut tokens: HashMap<Link, Vec<Token>> = HashMap::new();
    let mut next_token = 0usize;
    let mut ctx = WorkerCtx {
        index,
        worker: router.worker(),
        links: arc_swap::Cache::new(links),
        bufs: Buffers::new(),
        clock,
        stats,
    };
    loop {
        ctx.worker.end_batch();
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(500))) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!("worker poll failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                while let Ok(cmd) = commands.try_recv() {
                    match cmd {
                        Command::Stop => return,
                        Command::Add(link, tun) => {
                            let token = Token(next_token);
                            next_token += 1;
                            let fd = tun.as_raw_fd();
                            if let Err(e) = poll.registry().register(
                                &mut SourceFd(&fd),
                                token,
                                Interest::READABLE,
                            ) {
                                tracing::error!("cannot poll {}: {e}", tun.name());
                                continue;
                            }
                            tokens.entry(link).or_default().push(token);
                            // Packets may have queued before registration.
                            ctx.drain(link, &tun);
                            devices.insert(token, (link, tun));
                        }
                        Command::Remove(link) => {
                            for token in tokens.remove(&link).unwrap_or_default() {
                                forget(&poll, &mut devices, token);
                            }
                        }
                    }
                }
                continue;
            }
            if let Some((link, tun)) = devices.get(&ev.token()) {
                ctx.drain(*link, tun);
            }
        }
    }
}

/// Stops polling the device behind `token` and lets go of it.
fn forget(poll: &Poll, devices: &mut HashMap<Token, (Link, Arc<Tun>)>, token: Token) {
    if let Some((_, tun)) = devices.remove(&token) {
        let _ = poll.registry().deregister(&mut SourceFd(&tun.as_raw_fd()));
    }
}

/// A worker's buffers, allocated once.
struct Buffers {
    /// The packet being processed: a 64 KiB super-packet fits.
    packet: PacketBuf,
    /// One segment of a super-packet cut in software.
    segment: Box<[u8]>,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            // 64 KiB of packet (an IPv6 super-packet's payload length may
            // reach 65,535 behind its 40-byte header) and room to spare.
            packet: PacketBuf::new(PacketBuf::DEFAULT_CAPACITY + 1024),
            segment: vec![0; PacketBuf::DEFAULT_CAPACITY + 1024].into_boxed_slice(),
        }
    }
}

/// What a worker thread works with: its router handle, its view of the
/// link table, its buffers.
struct WorkerCtx<'r, 'l> {
    /// The worker's index (which queue of a multi-queue device it reads).
    index: usize,
    worker: crate::packet::router::Worker<'r>,
    links: arc_swap::Cache<&'l ArcSwap<LinkTable>, Arc<LinkTable>>,
    bufs: Buffers,
    clock: Instant,
    stats: &'r DataplaneStats,
}

impl WorkerCtx<'_, '_> {
    /// Reads every packet waiting on `tun`, the queue of `ingress` this
    /// worker serves (edge-triggered polling needs the device drained), and
    /// sends each where the router says.
    fn drain(&mut self, ingress: Link, tun: &Tun) {
        let now = Timestamp::from_millis(self.clock.elapsed().as_millis() as u64);
        let stats = self.stats;
        let Buffers {
            packet: buf,
            segment,
        } = &mut self.bufs;
        loop {
            let mut hdr = [0u8; VNET_HDR_LEN];
            let n = match tun.read_offload(&mut hdr, buf.buffer_mut()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // The device went away (its pod was deleted); the control
                    // plane removes it from this worker.
                    stats.read_errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            buf.set_len(n);
            buf.set_vnet(VnetHdr::from_bytes(&hdr));
            match self.worker.process(now, buf, ingress) {
                Verdict::Forward(link) => {
                    if let Some(out) = self.links.load().entry(link) {
                        if ingress == Link::Host && !out.served_by(self.index) {
                            stats.host_unsteered.fetch_add(1, Ordering::Relaxed);
                        }
                        // On the queue this worker reads, where it has one:
                        // the kernel steers the flow's next packets there.
                        send(out.queue(self.index), buf, segment, stats);
                    }
                }
                Verdict::Reply => send(tun, buf, segment, stats),
                Verdict::Drop(_) => {}
            }
        }
    }
}

/// Writes a processed packet to `out`: whole where `out` takes its offload
/// state, otherwise finished (checksum) or segmented in software.
fn send(out: &Tun, buf: &mut PacketBuf, segment: &mut [u8], stats: &DataplaneStats) {
    let hdr = buf.vnet();
    let uso = hdr.gso_type & !virtio::gso::ECN == virtio::gso::UDP_L4;
    let result = if hdr.is_plain() {
        out.write(buf.as_slice())
    } else if out.offload() && (!uso || out.udp_offload()) {
        out.write_offload(&hdr.to_bytes(), buf.as_slice())
    } else {
        return finish_in_software(out, buf, segment, stats);
    };
    if result.is_err() {
        stats.write_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// The software fallback of [`send`]: one plain packet with its checksum
/// completed, or the segments of a super-packet.
fn finish_in_software(out: &Tun, buf: &mut PacketBuf, segment: &mut [u8], stats: &DataplaneStats) {
    let hdr = buf.vnet();
    let Ok(info) = wire::parse(buf.as_slice()) else {
        stats.offload_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if !hdr.is_gso() {
        if !virtio::complete_checksum(buf.as_mut_slice(), &hdr, info.protocol) {
            stats.offload_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        stats.checksums_finished.fetch_add(1, Ordering::Relaxed);
        if out.write(buf.as_slice()).is_err() {
            stats.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        return;
    }
    let packet = buf.as_slice();
    let Ok(segmenter) = Segmenter::new(packet, &info, &hdr) else {
        stats.offload_errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    stats.segmented.fetch_add(1, Ordering::Relaxed);
    for i in 0..segmenter.segments() {
        match segmenter.write(packet, i, segment) {
            Ok(n) => {
                if out.write(&segment[..n]).is_err() {
                    stats.write_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                stats.offload_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}
