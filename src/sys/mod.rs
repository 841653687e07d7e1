//! The operating system: network namespaces, TUN devices, netlink, process
//! spawning. All `unsafe` of the crate lives here, each block with a
//! `// SAFETY:` comment.
//!
//! | module | owns |
//! |---|---|
//! | [`nsenter`] | moving the calling thread into an existing network namespace |

pub mod nsenter;
