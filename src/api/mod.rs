//! podnetd's API: the Kubernetes API (kubectl, client libraries, the
//! `podnet` CLI) over HTTPS and the root-only Unix socket, podnet's node
//! views beside it, and the client the CLI uses on the socket.
//!
//! | module | owns |
//! |---|---|
//! | [`kube`] | the Kubernetes API server: discovery, CRUD, watch, patch, tables, logs, Status errors |
//! | [`pki`] | the node's CA, serving and admin certificates, the admin kubeconfig |
//! | [`node`] | `/podnet/v1/`: the NAT table, tracked flows, counters, reset |
//! | [`client`] | [`ApiClient`]: HTTP/1.1 over the Unix socket, for the CLI |
//! | [`parse`] | name and label rules; the CLI's `K=V`, selector and port parsers |
//!
//! By hand: `curl --unix-socket /run/podnet/podnet.sock http://localhost/api/v1/pods`.

pub mod client;
pub mod kube;
pub mod node;
pub mod parse;
pub mod pki;

pub use client::{path_segment, ApiClient, ClientError, DEFAULT_SOCKET};
pub use parse::{
    parse_label, parse_port_spec, parse_selector, validate_label, validate_labels, validate_name,
    Labels, ParseError,
};
