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
//! Creation, reads and writes go through `tun-rs` (which also carries the
//! offload and multi-queue modes planned later); clearing the persist flag is a
//! direct `TUNSETPERSIST` ioctl because `tun-rs` can only set it.

use std::io;
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
             EINVAL that a non-TUN device of that name exists")]
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
}

/// An open TUN device.
pub struct Tun {
    device: SyncDevice,
    name: String,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("fd", &self.device.as_raw_fd())
            .finish()
    }
}

impl Tun {
    /// Creates the TUN device `name` in the calling thread's namespace, or
    /// attaches to it if a persistent TUN device of that name exists there.
    /// `persistent` sets or clears the persist flag either way: a persistent
    /// device outlives this value; a non-persistent one goes away with it.
    pub fn create(name: &str, persistent: bool) -> Result<Tun, TunError> {
        validate_name(name)?;
        let device = DeviceBuilder::new()
            .name(name)
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
            device,
            name: actual,
        };
        tun.set_persistent(persistent)?;
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

    /// Reads one packet into `buf`; returns its length. A packet longer than
    /// `buf` is truncated, so size `buf` for the MTU.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.device.recv(buf)
    }

    /// Writes one IP packet (it enters the device's namespace as if received).
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        self.device.send(packet)
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
