//! `podnetd`: the podnet node daemon. Parses flags, sets up logging and
//! signals, and runs [`podnet::daemon::run`] until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use ipnet::{Ipv4Net, Ipv6Net};
use podnet::daemon::{self, DaemonConfig};

/// mimalloc rather than glibc's malloc: the API and the reconcilers build
/// and drop JSON for every object they touch, and glibc's allocator spent
/// a growing share of a deletion of thousands of pods consolidating its
/// free lists (`malloc_consolidate`, `unlink_chunk`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Kubernetes-style node networking that serves the Kubernetes API: pod
/// IPs, service virtual IPs, a userspace NAT fast path, and kubectl.
#[derive(Parser, Debug)]
#[command(name = "podnetd", version)]
struct Args {
    /// TOML config file (keys as the flags, e.g. `node-subnet = "10.244.1.0/24"`); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The node's pod subnet [default: 10.244.0.0/24].
    #[arg(long, value_name = "CIDR")]
    node_subnet: Option<Ipv4Net>,
    /// The node's IPv6 pod subnet, for dual stack [default: none].
    #[arg(long, value_name = "CIDR")]
    node_subnet_v6: Option<Ipv6Net>,
    /// Where cluster IPs come from [default: 10.96.0.0/12].
    #[arg(long, value_name = "CIDR")]
    service_cidr: Option<Ipv4Net>,
    /// State directory [default: /var/lib/podnet].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// API socket [default: /run/podnet/podnet.sock].
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Host-side TUN device [default: podnet0].
    #[arg(long, value_name = "NAME")]
    host_device: Option<String>,
    /// MTU of the TUN devices [default: 1500].
    #[arg(long)]
    mtu: Option<u32>,
    /// Packet worker threads [default: one per core].
    #[arg(long)]
    workers: Option<usize>,
    /// Where the Kubernetes API listens [default: 127.0.0.1:6443].
    #[arg(long, value_name = "ADDR:PORT")]
    api_listen: Option<std::net::SocketAddr>,
    /// Where the admin kubeconfig is written [default: /etc/podnet/admin.kubeconfig].
    #[arg(long, value_name = "PATH")]
    admin_kubeconfig: Option<PathBuf>,
    /// This node's name [default: the host name].
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// When the object store and IPAM make writes durable: `periodic`
    /// (acknowledged once written, which survives a crash of podnetd; synced
    /// to disk within 50 ms) or `always` (synced before acknowledging)
    /// [default: periodic].
    #[arg(long, value_name = "POLICY")]
    store_sync: Option<podnet::control::store::SyncPolicy>,
    /// The share of the connection tracking table one source (a pod) may
    /// hold, in percent; 100 for no limit [default: 25].
    #[arg(long, value_name = "PERCENT")]
    conntrack_source_share_percent: Option<u8>,
    /// TUN devices without offloads (no virtio-net headers, checksum or
    /// segmentation offload): one MTU-sized packet per read or write.
    #[arg(long)]
    no_offload: bool,
    /// The node's address: NodePorts are reached at it, pod traffic leaving
    /// the node is masqueraded to it [default: the primary IPv4 address of
    /// the egress interface].
    #[arg(long, value_name = "IP")]
    node_ip: Option<std::net::Ipv4Addr>,
    /// The interface towards the outside world [default: the interface of
    /// the default route].
    #[arg(long, value_name = "IFACE")]
    egress_interface: Option<String>,
    /// Addresses for LoadBalancer services [default: none: they stay
    /// pending].
    #[arg(long, value_name = "CIDR")]
    lb_pool: Option<Ipv4Net>,
    /// Node ports for NodePort and LoadBalancer services [default: 30000-32767].
    #[arg(long, value_name = "A-B")]
    service_node_port_range: Option<String>,
    /// The ingress proxy's HTTP port, on the node's addresses; 0 turns it
    /// off [default: 80].
    #[arg(long, value_name = "PORT")]
    ingress_http_port: Option<u16>,
    /// The ingress proxy's HTTPS port; 0 turns it off [default: 443].
    #[arg(long, value_name = "PORT")]
    ingress_https_port: Option<u16>,
    /// Seconds the ingress proxy waits for a service's response head
    /// before answering 504 [default: 60].
    #[arg(long, value_name = "SECS")]
    ingress_upstream_timeout_secs: Option<u64>,
    /// Where the cluster DNS server sends names outside the cluster:
    /// `host` (the host's /etc/resolv.conf), `none`, or `IP[:PORT],...`
    /// [default: host].
    #[arg(long, value_name = "UPSTREAMS")]
    dns_upstream: Option<String>,
    /// The key Secrets are encrypted with in the object store; created
    /// (mode 0600) when missing on a store that holds no encrypted Secret
    /// [default: STATE_DIR/encryption.key].
    #[arg(long, value_name = "FILE")]
    encryption_key_file: Option<PathBuf>,
    /// Log filter (tracing syntax) [default: info, or RUST_LOG].
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = args
        .log
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(podnet::ingress::access_log::LogWriter)
        // Colour for a terminal only: a log file keeps plain text, and the
        // escapes cost formatting on every access log line.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut config = match &args.config {
        Some(path) => match DaemonConfig::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("podnetd: {e}");
                return ExitCode::from(2);
            }
        },
        None => DaemonConfig::default(),
    };
    if let Some(v) = args.node_subnet {
        config.node_subnet = v;
    }
    if let Some(v) = args.node_subnet_v6 {
        config.node_subnet_v6 = Some(v);
    }
    if let Some(v) = args.service_cidr {
        config.service_cidr = v;
    }
    if let Some(v) = args.state_dir {
        config.state_dir = v;
    }
    if let Some(v) = args.encryption_key_file {
        config.encryption_key_file = Some(v);
    }
    if let Some(v) = args.socket {
        config.socket = v;
    }
    if let Some(v) = args.host_device {
        config.host_device = v;
    }
    if let Some(v) = args.mtu {
        config.mtu = v;
    }
    if let Some(v) = args.workers {
        config.workers = v;
    }
    if let Some(v) = args.api_listen {
        config.api_listen = v;
    }
    if let Some(v) = args.admin_kubeconfig {
        config.admin_kubeconfig = v;
    }
    if let Some(v) = args.node_name {
        config.node_name = Some(v);
    }
    if let Some(v) = args.store_sync {
        config.store_sync = v;
    }
    if let Some(v) = args.conntrack_source_share_percent {
        config.conntrack_source_share_percent = v;
    }
    if let Some(v) = args.ingress_http_port {
        config.ingress_http_port = v;
    }
    if let Some(v) = args.ingress_https_port {
        config.ingress_https_port = v;
    }
    if let Some(v) = args.ingress_upstream_timeout_secs {
        config.ingress_upstream_timeout_secs = v;
    }
    if let Some(v) = args.dns_upstream {
        match v.parse() {
            Ok(u) => config.dns_upstream = u,
            Err(e) => {
                eprintln!("podnetd: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if args.no_offload {
        config.offload = false;
    }
    if let Some(v) = args.node_ip {
        config.node_ip = Some(v);
    }
    if let Some(v) = args.egress_interface {
        config.egress_interface = Some(v);
    }
    if let Some(v) = args.lb_pool {
        config.lb_pool = Some(v);
    }
    if let Some(v) = &args.service_node_port_range {
        match daemon::config::parse_port_range(v) {
            Ok(r) => config.service_node_port_range = r,
            Err(e) => {
                eprintln!("podnetd: {e}");
                return ExitCode::from(2);
            }
        }
    }

    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(sig, shutdown.clone()) {
            eprintln!("podnetd: cannot handle signal {sig}: {e}");
            return ExitCode::FAILURE;
        }
    }
    match daemon::run(config, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podnetd: {e}");
            ExitCode::FAILURE
        }
    }
}
