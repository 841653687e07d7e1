//! The podnetd API: the request and response types shared by the daemon, the
//! CLI and (later) the CNI plugin, and their transport, HTTP/1.1 + JSON over
//! the daemon's Unix socket.
//!
//! | module | owns |
//! |---|---|
//! | [`types`] | the JSON objects: specs (requests) and their reported state |
//! | [`parse`] | name and label rules; the CLI's `K=V`, selector and port parsers |
//! | [`handler`] | [`ApiHandler`], the operations the daemon implements, and the router that validates requests before they reach it |
//! | [`http`] | the server: [`serve`] on a `UnixListener`, one thread per connection |
//! | [`client`] | [`ApiClient`], typed methods for every route |
//! | [`kube`] | the Kubernetes API over HTTPS (kubectl, client libraries) |
//! | [`pki`] | the node's CA, serving and admin certificates, the admin kubeconfig |
//!
//! Routes (all JSON unless noted; errors are `{"error": "..."}` with a 4xx/5xx):
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET, POST | `/v1/pods` | [`PodSpec`] | `[Pod]`, [`Pod`] (201) |
//! | GET, DELETE | `/v1/pods/{name}` | | [`Pod`] |
//! | GET | `/v1/pods/{name}/logs` | | text/plain |
//! | GET, POST | `/v1/deployments` | [`DeploymentSpec`] | `[Deployment]`, [`Deployment`] (201) |
//! | GET, DELETE | `/v1/deployments/{name}` | | [`Deployment`] |
//! | PUT | `/v1/deployments/{name}/scale` | [`Scale`] | [`Deployment`] |
//! | GET, POST | `/v1/statefulsets` | [`StatefulSetSpec`] | `[StatefulSet]`, [`StatefulSet`] (201) |
//! | GET, DELETE | `/v1/statefulsets/{name}` | | [`StatefulSet`] |
//! | PUT | `/v1/statefulsets/{name}/scale` | [`Scale`] | [`StatefulSet`] |
//! | GET, POST | `/v1/services` | [`ServiceSpec`] | `[Service]`, [`Service`] (201) |
//! | GET, DELETE | `/v1/services/{name}` | | [`Service`] |
//! | GET | `/v1/nat` | | `[NatRule]` |
//! | GET | `/v1/conntrack` | | `[ConntrackEntry]` |
//! | POST | `/v1/reset` | | [`ResetSummary`] |
//!
//! By hand: `curl --unix-socket /run/podnet/podnet.sock http://localhost/v1/pods`.

pub mod client;
pub mod handler;
pub mod http;
pub mod kube;
pub mod parse;
pub mod pki;
pub mod types;

pub use client::{ApiClient, ClientError, DEFAULT_SOCKET};
pub use handler::{ApiError, ApiHandler};
pub use http::{serve, serve_with, ServerConfig};
pub use parse::{
    parse_label, parse_port_spec, parse_selector, validate_label, validate_labels, validate_name,
    ParseError,
};
pub use types::*;
