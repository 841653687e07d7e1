//! The control plane.
//!
//! | module | owns |
//! |---|---|
//! | [`alloc`] | cluster IPs, handed out as Services are created (an admission step) |
//! | [`ipam`] | pod address allocation from the node subnet |
//! | [`kinds`] | the Kubernetes kinds served: defaults, validation, table columns; one file each |
//! | [`objects`] | Kubernetes objects over the store: metadata, concurrency, deletion, garbage collection |
//! | [`reconcile`] | one reconciler per kind (ReplicaSets, Deployments, Endpoints) and the manager that feeds them |
//! | [`store`] | the revisioned key-value store under every object (etcd-shaped trait, durable file store) |

pub mod alloc;
pub mod ipam;
pub mod kinds;
pub mod netpol;
pub mod objects;
pub mod reconcile;
pub mod store;
