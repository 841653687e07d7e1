//! The daemon's configuration: defaults, a TOML file, command-line flags.
//!
//! Parsing is separate from acting: [`DaemonConfig::from_toml`] only checks
//! the text and says which key is wrong; nothing is bound or created here.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::Deserialize;

use crate::control::store::SyncPolicy;

/// Everything `podnetd` needs to start. `Default` is the single-node
/// default of the architecture: no config file needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The node's pod subnet; its first host address is the gateway on
    /// `podnet0`.
    pub node_subnet: Ipv4Net,
    /// The node's IPv6 pod subnet (dual stack), if any.
    pub node_subnet_v6: Option<Ipv6Net>,
    /// Where service cluster IPs come from.
    pub service_cidr: Ipv4Net,
    /// Where pods, services and addresses are kept across restarts.
    pub state_dir: PathBuf,
    /// The API socket (root only, mode 0600).
    pub socket: PathBuf,
    /// The host-side TUN device.
    pub host_device: String,
    /// MTU of every TUN device.
    pub mtu: u32,
    /// When writes of the object store and the IPAM state reach the disk
    /// (`store-sync = "periodic"`, the default: acknowledged once written,
    /// survives a crash of the daemon, synced within 50 ms; `"always"`:
    /// synced before acknowledged, survives power loss too). What each
    /// guarantees: [`crate::control::store::sync`].
    pub store_sync: SyncPolicy,
    /// Packet worker threads (0: one per core).
    pub workers: usize,
    /// Seconds a released address rests before reuse.
    pub ip_quarantine_secs: u64,
    /// The share of the connection tracking table one source address (a
    /// pod) may hold, in percent (1-100; 100: no per-source limit).
    pub conntrack_source_share_percent: u8,
    /// Where the Kubernetes API listens (HTTPS).
    pub api_listen: std::net::SocketAddr,
    /// Where the admin kubeconfig is written.
    pub admin_kubeconfig: PathBuf,
    /// This node's name [default: the host name].
    pub node_name: Option<String>,
    /// TUN offloads (virtio-net headers, checksum and segmentation
    /// offload) on every device the daemon creates: one read or write
    /// moves up to 64 KiB. Off (`offload = false`, `--no-offload`): one
    /// MTU-sized packet per read or write.
    pub offload: bool,
    /// The node's address for NodePorts and the source of masqueraded
    /// traffic (`--node-ip`) [default: the primary IPv4 address of the
    /// egress interface].
    pub node_ip: Option<Ipv4Addr>,
    /// The interface towards the outside world (`--egress-interface`)
    /// [default: the interface of the default route; without one, no
    /// traffic from outside is steered into the fast path and pods reach
    /// nothing beyond the node].
    pub egress_interface: Option<String>,
    /// Where LoadBalancer addresses come from (`--lb-pool`) [default:
    /// none: LoadBalancer services stay `<pending>`].
    pub lb_pool: Option<Ipv4Net>,
    /// The node port range, inclusive (`--service-node-port-range A-B`)
    /// [default: 30000-32767].
    pub service_node_port_range: (u16, u16),
    /// The cluster DNS address written into pods' `/etc/resolv.conf`
    /// (`dnsPolicy: ClusterFirst`), as the kubelet's `--cluster-dns`.
    pub cluster_dns: IpAddr,
    /// Where the cluster DNS server sends names outside the cluster
    /// (`dns-upstream`: `host`, `none`, or addresses `IP[:PORT],...`)
    /// [default: host: the nameservers of the host's `/etc/resolv.conf`].
    pub dns_upstream: DnsUpstream,
    /// The ingress proxy's HTTP port on every address of the node's
    /// namespace (`ingress-http-port`; 0: off).
    pub ingress_http_port: u16,
    /// The ingress proxy's HTTPS port (`ingress-https-port`; 0: off).
    pub ingress_https_port: u16,
    /// Seconds the ingress proxy waits for a service to connect and send
    /// its response head before answering 504 (`ingress-upstream-timeout-secs`).
    pub ingress_upstream_timeout_secs: u64,
    /// The key Secrets are encrypted with in the object store
    /// (`encryption-key-file`) [default: `<state-dir>/encryption.key`,
    /// created with mode 0600 on first start].
    pub encryption_key_file: Option<PathBuf>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            node_subnet: Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 24).expect("valid literal"),
            node_subnet_v6: None,
            service_cidr: Ipv4Net::new(Ipv4Addr::new(10, 96, 0, 0), 12).expect("valid literal"),
            state_dir: PathBuf::from("/var/lib/podnet"),
            socket: PathBuf::from("/run/podnet/podnet.sock"),
            host_device: "podnet0".to_string(),
            mtu: 1500,
            store_sync: SyncPolicy::default(),
            workers: 0,
            ip_quarantine_secs: 30,
            conntrack_source_share_percent: 25,
            api_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 6443)),
            admin_kubeconfig: PathBuf::from("/etc/podnet/admin.kubeconfig"),
            node_name: None,
            offload: true,
            node_ip: None,
            egress_interface: None,
            lb_pool: None,
            service_node_port_range: crate::control::alloc::DEFAULT_NODE_PORT_RANGE,
            cluster_dns: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10)),
            dns_upstream: DnsUpstream::Host,
            ingress_http_port: 80,
            ingress_https_port: 443,
            ingress_upstream_timeout_secs: 60,
            encryption_key_file: None,
        }
    }
}

/// Where names outside the cluster zone are resolved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DnsUpstream {
    /// The nameservers of the host's `/etc/resolv.conf`, read at start.
    #[default]
    Host,
    /// Nowhere: such names get SERVFAIL at once.
    None,
    /// These servers, asked in order.
    Servers(Vec<std::net::SocketAddr>),
}

impl std::str::FromStr for DnsUpstream {
    type Err = ConfigError;

    /// `host`, `none`, or `IP[:PORT]` / `[IPv6]:PORT` separated by commas.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim() {
            "host" => return Ok(DnsUpstream::Host),
            "none" => return Ok(DnsUpstream::None),
            _ => {}
        }
        let servers = s
            .split(',')
            .map(str::trim)
            .map(|a| {
                a.parse::<std::net::SocketAddr>()
                    .or_else(|_| a.parse::<IpAddr>().map(|ip| (ip, 53).into()))
                    .map_err(|_| ConfigError::Invalid {
                        key: "dns-upstream",
                        message: format!(
                            "{a:?} is not an address (IP or IP:PORT); use `host`, `none` or a list like 192.0.2.53,192.0.2.54:5353"
                        ),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DnsUpstream::Servers(servers))
    }
}

/// A configuration file or flag that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the key.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: {key}: {message}")]
    Invalid {
        /// The key (or flag) at fault.
        key: &'static str,
        /// What is wrong and what would be right.
        message: String,
    },
}

/// The TOML schema: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    node_subnet: Option<Ipv4Net>,
    node_subnet_v6: Option<Ipv6Net>,
    service_cidr: Option<Ipv4Net>,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    host_device: Option<String>,
    mtu: Option<u32>,
    store_sync: Option<String>,
    workers: Option<usize>,
    ip_quarantine_secs: Option<u64>,
    conntrack_source_share_percent: Option<u8>,
    api_listen: Option<std::net::SocketAddr>,
    admin_kubeconfig: Option<PathBuf>,
    node_name: Option<String>,
    offload: Option<bool>,
    node_ip: Option<Ipv4Addr>,
    egress_interface: Option<String>,
    lb_pool: Option<Ipv4Net>,
    service_node_port_range: Option<String>,
    cluster_dns: Option<IpAddr>,
    dns_upstream: Option<String>,
    ingress_http_port: Option<u16>,
    ingress_https_port: Option<u16>,
    ingress_upstream_timeout_secs: Option<u64>,
    encryption_key_file: Option<PathBuf>,
}

impl DaemonConfig {
    /// The encryption key file in use (the configured one, or
    /// `<state-dir>/encryption.key`).
    pub fn encryption_key_path(&self) -> PathBuf {
        self.encryption_key_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("encryption.key"))
    }

    /// Reads a TOML file over the defaults (keys as the flags, e.g.
    /// `node-subnet = "10.244.1.0/24"`).
    pub fn from_file(path: &Path) -> Result<DaemonConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        DaemonConfig::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text over the defaults.
    pub fn from_toml(text: &str) -> Result<DaemonConfig, ConfigError> {
        let f: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        let d = DaemonConfig::default();
        let store_sync = match f.store_sync {
            None => d.store_sync,
            Some(text) => text.parse().map_err(|e| ConfigError::Invalid {
                key: "store-sync",
                message: format!("{e}"),
            })?,
        };
        let service_node_port_range = match f.service_node_port_range {
            None => d.service_node_port_range,
            Some(text) => parse_port_range(&text)?,
        };
        let dns_upstream = match f.dns_upstream {
            None => d.dns_upstream,
            Some(text) => text.parse()?,
        };
        let c = DaemonConfig {
            dns_upstream,
            node_subnet: f.node_subnet.unwrap_or(d.node_subnet),
            node_subnet_v6: f.node_subnet_v6.or(d.node_subnet_v6),
            service_cidr: f.service_cidr.unwrap_or(d.service_cidr),
            state_dir: f.state_dir.unwrap_or(d.state_dir),
            socket: f.socket.unwrap_or(d.socket),
            host_device: f.host_device.unwrap_or(d.host_device),
            mtu: f.mtu.unwrap_or(d.mtu),
            store_sync,
            workers: f.workers.unwrap_or(d.workers),
            ip_quarantine_secs: f.ip_quarantine_secs.unwrap_or(d.ip_quarantine_secs),
            conntrack_source_share_percent: f
                .conntrack_source_share_percent
                .unwrap_or(d.conntrack_source_share_percent),
            api_listen: f.api_listen.unwrap_or(d.api_listen),
            admin_kubeconfig: f.admin_kubeconfig.unwrap_or(d.admin_kubeconfig),
            node_name: f.node_name.or(d.node_name),
            offload: f.offload.unwrap_or(d.offload),
            node_ip: f.node_ip.or(d.node_ip),
            egress_interface: f.egress_interface.or(d.egress_interface),
            lb_pool: f.lb_pool.or(d.lb_pool),
            service_node_port_range,
            cluster_dns: f.cluster_dns.unwrap_or(d.cluster_dns),
            ingress_http_port: f.ingress_http_port.unwrap_or(d.ingress_http_port),
            ingress_https_port: f.ingress_https_port.unwrap_or(d.ingress_https_port),
            ingress_upstream_timeout_secs: f
                .ingress_upstream_timeout_secs
                .unwrap_or(d.ingress_upstream_timeout_secs),
            encryption_key_file: f.encryption_key_file.or(d.encryption_key_file),
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.node_subnet.prefix_len() > 30 || self.node_subnet.prefix_len() < 16 {
            return bad(
                "node-subnet",
                format!("{} must be between a /16 and a /30", self.node_subnet),
            );
        }
        if !(1..=100).contains(&self.conntrack_source_share_percent) {
            return bad(
                "conntrack-source-share-percent",
                format!(
                    "{} is not a percentage of the table between 1 and 100 (100: no per-source limit)",
                    self.conntrack_source_share_percent
                ),
            );
        }
        if self.node_subnet.network() != self.node_subnet.addr() {
            return bad(
                "node-subnet",
                format!(
                    "{} has host bits set; did you mean {}?",
                    self.node_subnet,
                    self.node_subnet.trunc()
                ),
            );
        }
        if self.service_cidr.network() != self.service_cidr.addr() {
            return bad(
                "service-cidr",
                format!(
                    "{} has host bits set; did you mean {}?",
                    self.service_cidr,
                    self.service_cidr.trunc()
                ),
            );
        }
        if self.service_cidr.contains(&self.node_subnet.network())
            || self.node_subnet.contains(&self.service_cidr.network())
        {
            return bad(
                "service-cidr",
                format!(
                    "{} overlaps the node subnet {}",
                    self.service_cidr, self.node_subnet
                ),
            );
        }
        if !(576..=65_535).contains(&self.mtu) {
            return bad("mtu", format!("{} is outside 576..=65535", self.mtu));
        }
        if self.host_device.is_empty()
            || self.host_device.len() > 15
            || self.host_device.contains('/')
        {
            return bad(
                "host-device",
                format!(
                    "{:?} is not a valid interface name (1-15 characters, no '/')",
                    self.host_device
                ),
            );
        }
        let (lo, hi) = self.service_node_port_range;
        if lo == 0 || lo > hi {
            return bad(
                "service-node-port-range",
                format!("{lo}-{hi} is not a range of ports A-B with 1 <= A <= B"),
            );
        }
        let (snat_lo, snat_hi) = crate::packet::router::SNAT_PORTS;
        if lo <= snat_hi && hi >= snat_lo {
            return bad(
                "service-node-port-range",
                format!(
                    "{lo}-{hi} overlaps {snat_lo}-{snat_hi}, the ports podnet uses for source NAT of pod traffic leaving the node"
                ),
            );
        }
        if let Some(dev) = &self.egress_interface {
            if dev.is_empty() || dev.len() > 15 || dev.contains('/') {
                return bad(
                    "egress-interface",
                    format!("{dev:?} is not a valid interface name (1-15 characters, no '/')"),
                );
            }
        }
        if let Some(pool) = self.lb_pool {
            if pool.network() != pool.addr() {
                return bad(
                    "lb-pool",
                    format!("{pool} has host bits set; did you mean {}?", pool.trunc()),
                );
            }
            if pool.contains(&self.node_subnet.network())
                || self.node_subnet.contains(&pool.network())
                || pool.contains(&self.service_cidr.network())
                || self.service_cidr.contains(&pool.network())
            {
                return bad(
                    "lb-pool",
                    format!(
                        "{pool} overlaps the node subnet {} or the service CIDR {}",
                        self.node_subnet, self.service_cidr
                    ),
                );
            }
        }
        if self.ingress_http_port != 0 && self.ingress_http_port == self.ingress_https_port {
            return bad(
                "ingress-https-port",
                format!(
                    "{} is also the ingress HTTP port; give them different ports (0 turns one off)",
                    self.ingress_https_port
                ),
            );
        }
        if !(1..=3600).contains(&self.ingress_upstream_timeout_secs) {
            return bad(
                "ingress-upstream-timeout-secs",
                format!(
                    "{} is outside 1..=3600 seconds",
                    self.ingress_upstream_timeout_secs
                ),
            );
        }
        if self.workers > 256 {
            return bad(
                "workers",
                format!("{} workers is more than 256", self.workers),
            );
        }
        Ok(())
    }

    /// The gateway address on the host device: the subnet's first host.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.node_subnet.network().to_bits() + 1)
    }

    /// The IPv6 gateway, if dual stack.
    pub fn gateway_v6(&self) -> Option<std::net::Ipv6Addr> {
        self.node_subnet_v6
            .map(|n| std::net::Ipv6Addr::from(n.network().to_bits() + 1))
    }

    /// Worker threads to start.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Whether `addr` is a usable cluster IP.
    pub fn in_service_cidr(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => self.service_cidr.contains(&a),
            IpAddr::V6(_) => false,
        }
    }
}

/// Parses `A-B` (`--service-node-port-range`).
pub fn parse_port_range(text: &str) -> Result<(u16, u16), ConfigError> {
    let bad = || ConfigError::Invalid {
        key: "service-node-port-range",
        message: format!("{text:?} is not a port range such as 30000-32767"),
    };
    let (a, b) = text.trim().split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_upstream_is_host_none_or_addresses() {
        assert_eq!(DaemonConfig::default().dns_upstream, DnsUpstream::Host);
        let c = DaemonConfig::from_toml("dns-upstream = \"none\"").unwrap();
        assert_eq!(c.dns_upstream, DnsUpstream::None);
        let c =
            DaemonConfig::from_toml("dns-upstream = \"192.0.2.53, [2001:db8::1]:5353\"").unwrap();
        assert_eq!(
            c.dns_upstream,
            DnsUpstream::Servers(vec![
                "192.0.2.53:53".parse().unwrap(),
                "[2001:db8::1]:5353".parse().unwrap()
            ])
        );
        let e = DaemonConfig::from_toml("dns-upstream = \"resolver.example\"").unwrap_err();
        assert!(e.to_string().contains("dns-upstream"), "{e}");
    }

    #[test]
    fn cluster_dns_is_an_address() {
        assert_eq!(
            DaemonConfig::default().cluster_dns,
            "10.96.0.10".parse::<IpAddr>().unwrap()
        );
        let c = DaemonConfig::from_toml("cluster-dns = \"10.96.0.53\"").unwrap();
        assert_eq!(c.cluster_dns, "10.96.0.53".parse::<IpAddr>().unwrap());
        let e = DaemonConfig::from_toml("cluster-dns = \"dns\"").unwrap_err();
        assert!(e.to_string().contains("cluster-dns"), "{e}");
    }

    #[test]
    fn defaults_need_no_file() {
        let c = DaemonConfig::from_toml("").unwrap();
        assert_eq!(c, DaemonConfig::default());
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 0, 1));
    }

    #[test]
    fn file_overrides_and_errors_name_the_key() {
        let c = DaemonConfig::from_toml("node-subnet = \"10.244.3.0/24\"\nmtu = 1400\n").unwrap();
        assert_eq!(c.node_subnet.to_string(), "10.244.3.0/24");
        assert_eq!(c.mtu, 1400);
        let e = DaemonConfig::from_toml("nod-subnet = \"10.244.3.0/24\"").unwrap_err();
        assert!(e.to_string().contains("nod-subnet"), "{e}");
        assert!(c.offload, "offloads are on by default");
        assert!(!DaemonConfig::from_toml("offload = false").unwrap().offload);
        let e = DaemonConfig::from_toml("mtu = 10").unwrap_err();
        assert!(e.to_string().contains("mtu"), "{e}");
        let e = DaemonConfig::from_toml("service-cidr = \"10.244.0.0/16\"").unwrap_err();
        assert!(e.to_string().contains("overlaps"), "{e}");
        let e = DaemonConfig::from_toml("node-subnet = \"10.244.0.5/24\"").unwrap_err();
        assert!(e.to_string().contains("host bits"), "{e}");
    }

    #[test]
    fn edge_keys_parse_and_refuse_what_cannot_work() {
        let c = DaemonConfig::from_toml(
            "node-ip = \"192.0.2.1\"\negress-interface = \"eth1\"\nlb-pool = \"198.51.100.0/28\"\nservice-node-port-range = \"31000-31999\"\n",
        )
        .unwrap();
        assert_eq!(c.node_ip, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(c.egress_interface.as_deref(), Some("eth1"));
        assert_eq!(c.lb_pool.unwrap().to_string(), "198.51.100.0/28");
        assert_eq!(c.service_node_port_range, (31_000, 31_999));
        assert_eq!(
            DaemonConfig::default().service_node_port_range,
            (30_000, 32_767)
        );
        for bad in [
            "service-node-port-range = \"32767-30000\"",
            "service-node-port-range = \"30000\"",
            "service-node-port-range = \"60000-65000\"",
            "lb-pool = \"10.244.0.0/16\"",
            "lb-pool = \"198.51.100.1/28\"",
        ] {
            let e = DaemonConfig::from_toml(bad).unwrap_err();
            let key = bad.split(' ').next().unwrap();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
    }

    #[test]
    fn ingress_ports_default_to_80_and_443_and_0_turns_one_off() {
        let c = DaemonConfig::from_toml("").unwrap();
        assert_eq!(
            (
                c.ingress_http_port,
                c.ingress_https_port,
                c.ingress_upstream_timeout_secs
            ),
            (80, 443, 60)
        );
        let c = DaemonConfig::from_toml(
            "ingress-http-port = 0\ningress-https-port = 8443\ningress-upstream-timeout-secs = 5",
        )
        .unwrap();
        assert_eq!(
            (
                c.ingress_http_port,
                c.ingress_https_port,
                c.ingress_upstream_timeout_secs
            ),
            (0, 8443, 5)
        );
        let e = DaemonConfig::from_toml("ingress-http-port = 8080\ningress-https-port = 8080")
            .unwrap_err();
        assert!(e.to_string().contains("ingress-https-port"), "{e}");
        let e = DaemonConfig::from_toml("ingress-upstream-timeout-secs = 0").unwrap_err();
        assert!(
            e.to_string().contains("ingress-upstream-timeout-secs"),
            "{e}"
        );
        assert!(DaemonConfig::from_toml("ingress-http-port = 70000").is_err());
    }

    #[test]
    fn conntrack_source_share_is_a_percentage() {
        assert_eq!(
            DaemonConfig::from_toml("")
                .unwrap()
                .conntrack_source_share_percent,
            25
        );
        let c = DaemonConfig::from_toml("conntrack-source-share-percent = 100").unwrap();
        assert_eq!(c.conntrack_source_share_percent, 100);
        for bad in ["0", "101", "-1"] {
            let text = format!("conntrack-source-share-percent = {bad}");
            assert!(DaemonConfig::from_toml(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn encryption_key_file_defaults_under_the_state_dir() {
        let c = DaemonConfig::from_toml("state-dir = \"/srv/pn\"").unwrap();
        assert_eq!(
            c.encryption_key_path(),
            PathBuf::from("/srv/pn/encryption.key")
        );
        let c = DaemonConfig::from_toml("encryption-key-file = \"/etc/podnet/k\"").unwrap();
        assert_eq!(c.encryption_key_path(), PathBuf::from("/etc/podnet/k"));
    }

    #[test]
    fn store_sync_is_periodic_unless_set_and_refuses_other_words() {
        assert_eq!(
            DaemonConfig::from_toml("").unwrap().store_sync,
            SyncPolicy::Periodic
        );
        for (text, policy) in [
            ("store-sync = \"always\"", SyncPolicy::Always),
            ("store-sync = \"periodic\"", SyncPolicy::Periodic),
        ] {
            assert_eq!(DaemonConfig::from_toml(text).unwrap().store_sync, policy);
        }
        for bad in ["store-sync = \"fsync\"", "store-sync = \"\""] {
            let e = DaemonConfig::from_toml(bad).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(
                    e,
                    ConfigError::Invalid {
                        key: "store-sync",
                        ..
                    }
                ),
                "{text}"
            );
            assert!(
                text.contains("\"always\"") && text.contains("\"periodic\""),
                "{text}"
            );
        }
        let e = DaemonConfig::from_toml("store-sync = true").unwrap_err();
        assert!(e.to_string().contains("store-sync"), "{e}");
        let e = DaemonConfig::from_toml("store_sync = \"always\"").unwrap_err();
        assert!(
            e.to_string().contains("store_sync"),
            "keys are kebab-case: {e}"
        );
    }
}
