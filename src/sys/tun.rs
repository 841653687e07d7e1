//! TUN devices: the links between pods (and the host) and the fast path.
//!
//! A device is `IFF_TUN | IFF_NO_PI`: every read returns one IP packet and every
//! write sends one, with no framing header. It is created in the namespace of the
//! calling thread, so creating it inside [`NetNs::run`](super::netns::NetNs::run)
//! puts it straight into the pod; the descriptor then works from any thread.
//!
//! Devices of a pod are persistent: they outlive the descriptor, so a restarted
//! daemon reattaches by name (`TUNSETIFF` on an existing device with the same
//! flags) and pods keep their addresses and routes.
//!
//! With offloads ([`TunOptions::offload`]) a device is also `IFF_VNET_HDR`
//! with `TUNSETOFFLOAD` `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`, plus
//! `TUN_F_USO4 | TUN_F_USO6` where the kernel has them (6.2+): every read
//! and write then carries a 10-byte virtio-net header before the packet,
//! and one read can return a 64 KiB super-packet with a partial checksum
//! (see `packet::wire::virtio`). `IFF_VNET_HDR` belongs to the descriptor,
//! the offload mask to the device: a reattach sets both again, and one
//! without offloads clears the mask, so a device left by a daemon with
//! offloads never hands super-packets to one without.
//!
//! A device can have several queues ([`Tun::open_queues`], `IFF_MULTI_QUEUE`),
//! each its own descriptor: the kernel hands a packet sent out of the device
//! to one queue, chosen by a table of flows it learns from writes (a flow's
//! packets go to the queue its last packet was written on) and by the flow
//! hash otherwise. So a reader that writes a flow's replies on the queue it
//! reads gets the flow's next packets there too. `IFF_MULTI_QUEUE` is part of
//! the flags that must match when attaching to an existing device.
//!
//! Creation, reads and writes go through `tun-rs`; clearing the persist flag
//! is a direct `TUNSETPERSIST` ioctl because `tun-rs` can only set it.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use tun_rs::{DeviceBuilder, SyncDevice};

/// Longest interface name (IFNAMSIZ less the NUL).
pub const MAX_NAME_LEN: usize = 15;

/// Errors of TUN device operations.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The name can't be an interface name.
    #[error("invalid TUN device name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// `open(/dev/net/tun)` + `TUNSETIFF` failed.
    #[error("creating TUN device {name} (open /dev/net/tun, TUNSETIFF) failed: {source}; \
             needs root (CAP_NET_ADMIN) and the tun module; EBUSY means another process holds the device, \
             EINVAL that a non-TUN device of that name exists or a TUN device with other flags \
             (IFF_MULTI_QUEUE, IFF_VNET_HDR)")]
    Create { name: String, source: io::Error },
    /// `TUNSETPERSIST` failed.
    #[error("TUNSETPERSIST({on}) on TUN device {name} failed: {source}")]
    Persist {
        name: String,
        on: bool,
        source: io::Error,
    },
    /// Reading the device name back (`TUNGETIFF`) failed.
    #[error("reading the name of TUN device {name} (TUNGETIFF) failed: {source}")]
    Name { name: String, source: io::Error },
    /// Attaching a further queue (`TUNSETIFF` with `IFF_MULTI_QUEUE`) failed.
    #[error("attaching queue {queue} of TUN device {name} (TUNSETIFF, IFF_MULTI_QUEUE) failed: {source}; \
             the kernel allows at most 256 queues")]
    Queue {
        name: String,
        queue: usize,
        source: io::Error,
    },
}

/// Most queues a multi-queue TUN device can have (the kernel's `MAX_TAP_QUEUES`).
pub const MAX_QUEUES: usize = 256;

/// Length of the virtio-net header before each packet of a device with
/// offloads (`struct virtio_net_hdr`).
pub const VNET_HDR_LEN: usize = 10;

/// How to open a TUN device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunOptions {
    /// Keep the device after the descriptor closes (pods' `eth0`).
    pub persistent: bool,
    /// Virtio-net headers with checksum and segmentation offloads.
    pub offload: bool,
}

/// An open TUN device.
pub struct Tun {
    device: SyncDevice,
    name: String,
    offload: bool,
    udp_offload: bool,
    multi_queue: bool,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("fd", &self.device.as_raw_fd())
            .field("offload", &self.offload)
            .field("multi_queue", &self.multi_queue)
            .finish()
    }
}

impl Tun {
    /// Creates the TUN device `name` in the calling thread's namespace, or
    /// attaches to it if a persistent TUN device of that name exists there.
    /// `persistent` sets or clears the persist flag either way: a persistent
    /// device outlives this value; a non-persistent one goes away with it.
    /// Offloads are off; see [`Tun::open`].
    pub fn create(name: &str, persistent: bool) -> Result<Tun, TunError> {
        Tun::open(
            name,
            TunOptions {
                persistent,
                offload: false,
            },
        )
    }

    /// Creates or attaches to the TUN device `name` as [`Tun::create`]
    /// does, with or without offloads. Offloads need a little-endian host
    /// (a TUN device's virtio header is in the host's byte order); elsewhere
    /// the device opens without them.
    pub fn open(name: &str, options: TunOptions) -> Result<Tun, TunError> {
        Tun::open_with(name, options, false)
    }

    /// Creates or attaches to the multi-queue TUN device `name`
    /// (`IFF_MULTI_QUEUE`) and opens `queues` queues of it (at least one,
    /// at most [`MAX_QUEUES`]), each a descriptor of its own with the same
    /// options. An existing device of that name must be multi-queue too.
    pub fn open_queues(
        name: &str,
        options: TunOptions,
        queues: usize,
    ) -> Result<Vec<Tun>, TunError> {
        let first = Tun::open_with(name, options, true)?;
        let mut all = Vec::with_capacity(queues.clamp(1, MAX_QUEUES));
        for queue in 1..queues.clamp(1, MAX_QUEUES) {
            let device = first.device.try_clone().map_err(|source| TunError::Queue {
                name: first.name.clone(),
                queue,
                source,
            })?;
            all.push(Tun {
                device,
                name: first.name.clone(),
                offload: first.offload,
                udp_offload: first.udp_offload,
                multi_queue: true,
            });
        }
        all.insert(0, first);
        Ok(all)
    }

    fn open_with(name: &str, options: TunOptions, multi_queue: bool) -> Result<Tun, TunError> {
        validate_name(name)?;
        let offload = options.offload && cfg!(target_endian = "little");
        let device = DeviceBuilder::new()
            .name(name)
            .offload(offload)
            .multi_queue(multi_queue)
            .build_sync()
            .map_err(|source| TunError::Create {
                name: name.to_owned(),
                source,
            })?;
        let actual = device.name().map_err(|source| TunError::Name {
            name: name.to_owned(),
            source,
        })?;
        let tun = Tun {
            udp_offload: offload && device.udp_gso(),
            device,
            name: actual,
            offload,
            multi_queue,
        };
        tun.set_persistent(options.persistent)?;
        Ok(tun)
    }

    /// Sets or clears the persist flag (`TUNSETPERSIST`).
    pub fn set_persistent(&self, on: bool) -> Result<(), TunError> {
        // SAFETY: the descriptor is a live TUN descriptor owned by `self.device`
        // for the duration of the call; TUNSETPERSIST takes its argument by value
        // (an int flag) and writes no memory of ours.
        let rc = unsafe {
            libc::ioctl(
                self.device.as_raw_fd(),
                libc::TUNSETPERSIST as _,
                libc::c_ulong::from(on),
            )
        };
        if rc < 0 {
            return Err(TunError::Persist {
                name: self.name.clone(),
                on,
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Switches `O_NONBLOCK` (for readiness polling with epoll/mio).
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.device.set_nonblocking(on)
    }

    /// Whether reads and writes carry a virtio-net header (checksum and
    /// TCP segmentation offloads are on).
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// Whether the device is multi-queue (this value is one of its queues).
    pub fn multi_queue(&self) -> bool {
        self.multi_queue
    }

    /// Whether UDP segmentation offload (USO) is on too.
    pub fn udp_offload(&self) -> bool {
        self.udp_offload
    }

    /// Reads one packet into `buf`; returns its length. A packet longer than
    /// `buf` is truncated, so size `buf` for the MTU. On a device with
    /// offloads the virtio-net header is read and dropped: use
    /// [`Tun::read_offload`] there, which tells a super-packet or a partial
    /// checksum from a plain packet.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.offload {
            let mut hdr = [0u8; VNET_HDR_LEN];
            return self.read_offload(&mut hdr, buf);
        }
        self.device.recv(buf)
    }

    /// Reads one packet into `buf` and its virtio-net header into `hdr`
    /// (all zero on a device without offloads: a plain packet); returns the
    /// packet's length. Size `buf` for 64 KiB on a device with offloads.
    pub fn read_offload(&self, hdr: &mut [u8; VNET_HDR_LEN], buf: &mut [u8]) -> io::Result<usize> {
        if !self.offload {
            *hdr = [0; VNET_HDR_LEN];
            return self.device.recv(buf);
        }
        let n = self
            .device
            .recv_vectored(&mut [IoSliceMut::new(hdr), IoSliceMut::new(buf)])?;
        if n < VNET_HDR_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TUN read shorter than its virtio-net header",
            ));
        }
        Ok(n - VNET_HDR_LEN)
    }

    /// Writes one plain IP packet (it enters the device's namespace as if
    /// received); on a device with offloads, behind an all-zero header.
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        if self.offload {
            return self.write_offload(&[0; VNET_HDR_LEN], packet);
        }
        self.device.send(packet)
    }

    /// Writes one packet behind the virtio-net header `hdr`; returns the
    /// packet bytes written. A device without offloads takes only plain
    /// packets (an all-zero `hdr`): anything else is refused with
    /// `InvalidInput`, as the caller must segment or finish it first.
    pub fn write_offload(&self, hdr: &[u8; VNET_HDR_LEN], packet: &[u8]) -> io::Result<usize> {
        if !self.offload {
            if hdr.iter().any(|&b| b != 0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "offload header on a TUN device without offloads",
                ));
            }
            return self.device.send(packet);
        }
        let n = self
            .device
            .send_vectored(&[IoSlice::new(hdr), IoSlice::new(packet)])?;
        Ok(n.saturating_sub(VNET_HDR_LEN))
    }

    /// The raw descriptor, for registering with epoll/mio.
    pub fn as_raw_fd(&self) -> RawFd {
        self.device.as_raw_fd()
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.device.as_raw_fd()
    }
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.device.as_fd()
    }
}

fn validate_name(name: &str) -> Result<(), TunError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > MAX_NAME_LEN {
        "it is longer than 15 bytes (IFNAMSIZ)"
    } else if name.contains(['/', '\0']) || name.chars().any(char::is_whitespace) {
        "it contains '/', NUL or whitespace"
    } else if name == "." || name == ".." {
        "it is '.' or '..'"
    } else {
        return Ok(());
    };
    Err(TunError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}
