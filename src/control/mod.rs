//! The control plane.
//!
//! | module | owns |
//! |---|---|
//! | [`ipam`] | pod address allocation from the node subnet |

pub mod ipam;
