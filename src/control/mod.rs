//! The control plane.
//!
//! | module | owns |
//! |---|---|
//! | [`ipam`] | pod address allocation from the node subnet |
//! | [`store`] | the revisioned key-value store under every object (etcd-shaped trait, durable file store) |

pub mod ipam;
pub mod store;
