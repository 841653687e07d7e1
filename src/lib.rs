//! podnet: Kubernetes-style node networking without Kubernetes.
//!
//! The crate is layered; each layer only uses the ones above it in this list:
//!
//! | module | owns |
//! |---|---|
//! | [`packet`] | sans-IO fast path: wire views, checksums, connection tracking, service NAT, Maglev, the [`packet::Router`] |
//! | [`control`] | control plane: IPAM and (later) the object model and snapshot building |
//! | [`sys`] | the OS: network namespaces, TUN devices, netlink, spawning pod processes; all `unsafe` lives here |
//! | [`daemon`] | `podnetd`: workers, the control loop, supervision, the API handler |
//! | [`api`] | the daemon's HTTP + JSON API over its Unix socket: types, server, client |
//! | [`dns`] | sans-IO cluster DNS: the zone built from Services, EndpointSlices and Pods, answers, the forwarding cache |
//! | [`ingress`] | the HTTP(S) reverse proxy that serves Ingresses: routes, TLS by SNI, forwarding |
//!
//! `packet` does no IO, reads no clock (time is an argument), takes no lock and
//! allocates nothing per packet, so it is tested exhaustively in-process and
//! benchmarked precisely.

pub mod api;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod ingress;
pub mod packet;
pub mod sys;
