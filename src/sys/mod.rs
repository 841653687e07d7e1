//! The `sys` layer: everything podnet asks of the Linux kernel.
//!
//! | module | owns |
//! |---|---|
//! | [`netns`] | named network namespaces (`ip netns` compatible), running code inside one |
//! | [`tun`] | TUN devices: create, persist, reattach, read and write packets |
//! | [`link`] | netlink: links up/MTU/delete, addresses, routes in the calling thread's namespace |
//! | [`mount`] | a pod's mount and UTS namespaces (made, pinned, entered), bind and tmpfs mounts inside them |
//! | [`nsenter`] | moving the calling thread into an existing network namespace (the CLI's `pod exec`) |
//! | [`process`] | spawning a pod's process inside its namespace, signalling process groups |
//!
//! All of podnet's `unsafe` lives in this layer, each block with a `// SAFETY:`
//! comment. Each operation family has its own error enum whose messages name the
//! failing syscall or stage and what the user can do about it.
//!
//! Namespace discipline: every function here acts in the namespace of the
//! *calling thread*. To act inside a pod, call it within [`netns::NetNs::run`],
//! which runs a closure on a scratch thread that joined the pod's namespace; the
//! daemon's own threads never change namespace.

pub mod link;
pub mod mount;
pub mod netns;
pub mod nsenter;
pub mod process;
pub mod pty;
pub mod tc;
pub mod tun;

/// Whether the process runs with effective uid 0 (most of this layer needs it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
