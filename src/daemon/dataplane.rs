//! The data plane: worker threads moving packets between TUN devices and
//! the [`Router`].
//!
//! Each TUN descriptor belongs to exactly one worker, which polls it with
//! `mio` (edge-triggered), reads every waiting packet (until `EAGAIN`), runs
//! it through its [`crate::packet::router::Worker`] and writes it to the
//! device the verdict names. Devices are handed to workers round robin. The
//! control plane reaches workers only through the router's snapshots and a
//! command channel (add or remove a device), never a lock on the packet path.
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

/// Every device a verdict can name.
#[derive(Default)]
struct LinkTable {
    host: Option<Arc<Tun>>,
    pods: HashMap<u32, Arc<Tun>>,
}

impl LinkTable {
    fn get(&self, link: Link) -> Option<&Arc<Tun>> {
        match link {
            Link::Host => self.host.as_ref(),
            Link::Pod(id) => self.pods.get(&id.0),
        }
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
}

/// The running workers.
pub struct Dataplane {
    router: Arc<Router>,
    links: Arc<ArcSwap<LinkTable>>,
    workers: Vec<WorkerHandle>,
    owner: parking_lot::Mutex<HashMap<Link, usize>>,
    next: AtomicUsize,
    clock: Instant,
    stats: Arc<DataplaneStats>,
}

const WAKER: Token = Token(usize::MAX);

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
                .spawn(move || worker_loop(poll, rx, &router, &links, clock, &stats))?;
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
            next: AtomicUsize::new(0),
            clock,
            stats,
        })
    }

    /// Counters of the workers' IO errors.
    pub fn stats(&self) -> &DataplaneStats {
        &self.stats
    }

    /// Starts moving packets of `tun` as `link`.
    pub fn add(&self, link: Link, tun: Arc<Tun>) {
        self.publish_link(link, Some(&tun));
        let w = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        if let Some(old) = self.owner.lock().insert(link, w) {
            self.send(old, Command::Remove(link));
        }
        self.send(w, Command::Add(link, tun));
    }

    /// Stops moving packets of `link`; its device is closed once the worker
    /// has let go of it.
    pub fn remove(&self, link: Link) {
        self.publish_link(link, None);
        if let Some(w) = self.owner.lock().remove(&link) {
            self.send(w, Command::Remove(link));
        }
    }

    /// Publishes a link table with `link` set to `tun` (or removed).
    fn publish_link(&self, link: Link, tun: Option<&Arc<Tun>>) {
        self.links.rcu(|t| {
            let mut n = LinkTable {
                host: t.host.clone(),
                pods: t.pods.clone(),
            };
            match (link, tun) {
                (Link::Host, tun) => n.host = tun.cloned(),
                (Link::Pod(id), Some(tun)) => {
                    n.pods.insert(id.0, tun.clone());
                }
                (Link::Pod(id), None) => {
                    n.pods.remove(&id.0);
                }
            }
            n
        });
    }

    /// Writes a packet the control plane generated (a TCP RST for a flow
    /// whose backend went away) out of `link`.
    pub fn send_packet(&self, link: Link, packet: &[u8]) {
        if let Some(tun) = self.links.load().get(link) {
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
    mut poll: Poll,
    commands: Receiver<Command>,
    router: &Router,
    links: &ArcSwap<LinkTable>,
    clock: Instant,
    stats: &DataplaneStats,
) {
    let mut events = Events::with_capacity(256);
    let mut devices: HashMap<Token, (Link, Arc<Tun>)> = HashMap::new();
    let mut tokens: HashMap<Link, Token> = HashMap::new();
    let mut next_token = 0usize;
    let mut worker = router.worker();
    let mut links = arc_swap::Cache::new(links);
    let mut bufs = Buffers::new();
    loop {
        worker.end_batch();
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
                            if let Some(old) = tokens.insert(link, token) {
                                forget(&poll, &mut devices, old);
                            }
                            devices.insert(token, (link, tun));
                            // Packets may have queued before registration.
                            drain(
                                token,
                                &devices,
                                &mut worker,
                                &mut links,
                                &mut bufs,
                                clock,
                                stats,
                            );
                        }
                        Command::Remove(link) => {
                            if let Some(token) = tokens.remove(&link) {
                                forget(&poll, &mut devices, token);
                            }
                        }
                    }
                }
                continue;
            }
            drain(
                ev.token(),
                &devices,
                &mut worker,
                &mut links,
                &mut bufs,
                clock,
                stats,
            );
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

/// Reads every packet waiting on one device (edge-triggered polling needs
/// the device drained) and sends each where the router says.
fn drain(
    token: Token,
    devices: &HashMap<Token, (Link, Arc<Tun>)>,
    worker: &mut crate::packet::router::Worker<'_>,
    links: &mut arc_swap::Cache<&ArcSwap<LinkTable>, Arc<LinkTable>>,
    bufs: &mut Buffers,
    clock: Instant,
    stats: &DataplaneStats,
) {
    let Some((ingress, tun)) = devices.get(&token) else {
        return;
    };
    let now = Timestamp::from_millis(clock.elapsed().as_millis() as u64);
    let Buffers {
        packet: buf,
        segment,
    } = bufs;
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
        match worker.process(now, buf, *ingress) {
            Verdict::Forward(link) => {
                if let Some(out) = links.load().get(link) {
                    send(out, buf, segment, stats);
                }
            }
            Verdict::Reply => send(tun, buf, segment, stats),
            Verdict::Drop(_) => {}
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
