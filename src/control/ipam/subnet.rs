//! Subnet arithmetic: carving node subnets out of a cluster CIDR, and the usable
//! address range of one node subnet.
//!
//! Addresses of both families are handled as `u128` offsets so one walk serves
//! IPv4 and IPv6; the public types stay `IpNet`/`IpAddr`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Why a node subnet could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeSubnetError {
    /// The cluster CIDR text does not parse.
    #[error(
        "invalid cluster CIDR {input:?}: {reason}; write it like 10.244.0.0/16 or fd00:10:244::/56"
    )]
    InvalidCidr {
        /// The text given.
        input: String,
        /// What the parser said.
        reason: String,
    },
    /// The cluster CIDR has bits set below its prefix length.
    #[error("cluster CIDR {cidr} has host bits set; did you mean {}?", cidr.trunc())]
    HostBitsSet {
        /// The CIDR given.
        cidr: IpNet,
    },
    /// The node prefix is shorter than the cluster prefix or longer than the family allows.
    #[error("node prefix /{node_prefix} does not fit cluster CIDR {cluster}: it must be between /{} and /{max}", cluster.prefix_len())]
    BadNodePrefix {
        /// The cluster CIDR.
        cluster: IpNet,
        /// The node prefix length asked for.
        node_prefix: u8,
        /// The longest prefix the family allows.
        max: u8,
    },
    /// The node index is past the last node subnet of the cluster CIDR.
    #[error("node index {index} is out of range: cluster CIDR {cluster} holds {count} node subnets of /{node_prefix}; use a larger cluster CIDR or a longer node prefix")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// How many node subnets there are.
        count: u128,
        /// The cluster CIDR.
        cluster: IpNet,
        /// The node prefix length.
        node_prefix: u8,
    },
}

/// The node subnets of one cluster CIDR: node `i` owns the `i`-th block of
/// `/node_prefix` inside it (10.244.0.0/16 with /24 gives node 3 10.244.3.0/24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSubnets {
    cluster: IpNet,
    node_prefix: u8,
}

impl NodeSubnets {
    /// Node subnets of `node_prefix` inside `cluster`.
    pub fn new(cluster: IpNet, node_prefix: u8) -> Result<NodeSubnets, NodeSubnetError> {
        if cluster != cluster.trunc() {
            return Err(NodeSubnetError::HostBitsSet { cidr: cluster });
        }
        let max = cluster.max_prefix_len();
        if node_prefix < cluster.prefix_len() || node_prefix > max {
            return Err(NodeSubnetError::BadNodePrefix {
                cluster,
                node_prefix,
                max,
            });
        }
        Ok(NodeSubnets {
            cluster,
            node_prefix,
        })
    }

    /// Like [`NodeSubnets::new`] with the cluster CIDR given as text.
    pub fn parse(cluster: &str, node_prefix: u8) -> Result<NodeSubnets, NodeSubnetError> {
        let net: IpNet = cluster.trim().parse().map_err(|e: ipnet::AddrParseError| {
            NodeSubnetError::InvalidCidr {
                input: cluster.to_string(),
                reason: e.to_string(),
            }
        })?;
        NodeSubnets::new(net, node_prefix)
    }

    /// The cluster CIDR.
    pub fn cluster(&self) -> IpNet {
        self.cluster
    }

    /// How many node subnets the cluster CIDR holds.
    pub fn count(&self) -> u128 {
        let shift = u32::from(self.node_prefix - self.cluster.prefix_len());
        // A /0 cluster split into /128 nodes would be 2^128: saturate, it is only a bound.
        1u128.checked_shl(shift).unwrap_or(u128::MAX)
    }

    /// The subnet of node `index`.
    pub fn node(&self, index: u64) -> Result<IpNet, NodeSubnetError> {
        let count = self.count();
        if u128::from(index) >= count {
            return Err(NodeSubnetError::IndexOutOfRange {
                index,
                count,
                cluster: self.cluster,
                node_prefix: self.node_prefix,
            });
        }
        let family = Family::of(self.cluster.network());
        let host_bits = u32::from(family.bits() - self.node_prefix);
        // index < count, so the shifted index stays inside the cluster's host bits.
        let offset = u128::from(index).checked_shl(host_bits).unwrap_or(0);
        let base = to_u128(self.cluster.network()) + offset;
        Ok(match family {
            Family::V4 => IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(base as u32), self.node_prefix)
                    .map_err(|_| self.bad_prefix())?,
            ),
            Family::V6 => IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(base), self.node_prefix)
                    .map_err(|_| self.bad_prefix())?,
            ),
        })
    }

    fn bad_prefix(&self) -> NodeSubnetError {
        NodeSubnetError::BadNodePrefix {
            cluster: self.cluster,
            node_prefix: self.node_prefix,
            max: self.cluster.max_prefix_len(),
        }
    }
}

/// An address as a number, so both families share one arithmetic.
pub(crate) fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// What a reserved (never handed out) address of a node subnet is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservedRole {
    /// The network address (IPv4) or the subnet-router anycast address (IPv6).
    Network,
    /// The first host address, the node's gateway on `podnet0`.
    Gateway,
    /// The IPv4 broadcast address.
    Broadcast,
}

impl fmt::Display for ReservedRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReservedRole::Network => "network (subnet-router anycast) address",
            ReservedRole::Gateway => "gateway address",
            ReservedRole::Broadcast => "broadcast address",
        })
    }
}

/// The usable range of one node subnet: everything but the network address, the
/// gateway (first host) and, for IPv4, the broadcast address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pool {
    pub(crate) subnet: IpNet,
    pub(crate) family: Family,
    network: u128,
    /// First and last usable address, inclusive.
    pub(crate) first: u128,
    pub(crate) last: u128,
}

impl Pool {
    /// `None` when the subnet leaves no usable address (IPv4 /31, /32; IPv6 /127, /128).
    pub(crate) fn new(subnet: IpNet) -> Option<Pool> {
        let family = Family::of(subnet.network());
        let network = to_u128(subnet.network());
        let top = to_u128(subnet.broadcast());
        let last = match family {
            Family::V4 => top.checked_sub(1)?,
            Family::V6 => top,
        };
        let first = network + 2;
        (first <= last).then_some(Pool {
            subnet,
            family,
            network,
            first,
            last,
        })
    }

    /// How many addresses can be handed out.
    pub(crate) fn usable(&self) -> u128 {
        // A /0 IPv6 pool would overflow by one; a node subnet is never that large.
        (self.last - self.first).saturating_add(1)
    }

    pub(crate) fn contains(&self, addr: IpAddr) -> bool {
        Family::of(addr) == self.family && self.subnet.contains(&addr)
    }

    /// Which reserved role `addr` (inside the subnet) plays, if any.
    pub(crate) fn reserved_role(&self, addr: IpAddr) -> Option<ReservedRole> {
        let n = to_u128(addr);
        if n == self.network {
            Some(ReservedRole::Network)
        } else if n == self.network + 1 {
            Some(ReservedRole::Gateway)
        } else if n > self.last {
            Some(ReservedRole::Broadcast)
        } else {
            None
        }
    }

    /// True when `addr` may be handed out.
    pub(crate) fn is_usable(&self, addr: IpAddr) -> bool {
        self.contains(addr) && self.reserved_role(addr).is_none()
    }

    /// The gateway address (first host).
    pub(crate) fn gateway(&self) -> IpAddr {
        self.addr(self.network + 1)
    }

    pub(crate) fn addr(&self, n: u128) -> IpAddr {
        match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
        }
    }

    /// The usable address after `n`, wrapping from the last to the first.
    pub(crate) fn next(&self, n: u128) -> u128 {
        if n >= self.last || n < self.first {
            self.first
        } else {
            n + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn node_subnets_v4_and_v6() {
        let v4 = NodeSubnets::parse("10.244.0.0/16", 24).unwrap();
        assert_eq!(v4.count(), 256);
        assert_eq!(v4.node(0).unwrap(), net("10.244.0.0/24"));
        assert_eq!(v4.node(3).unwrap(), net("10.244.3.0/24"));
        assert_eq!(v4.node(255).unwrap(), net("10.244.255.0/24"));
        let v6 = NodeSubnets::parse("fd00:10:244::/56", 64).unwrap();
        assert_eq!(v6.node(0).unwrap(), net("fd00:10:244::/64"));
        assert_eq!(v6.node(5).unwrap(), net("fd00:10:244:5::/64"));
        let whole = NodeSubnets::parse("::/0", 128).unwrap();
        assert_eq!(whole.count(), u128::MAX);
        assert_eq!(whole.node(7).unwrap(), net("::7/128"));
    }

    #[test]
    fn node_subnet_errors() {
        let v4 = NodeSubnets::parse("10.244.0.0/16", 24).unwrap();
        let err = v4.node(256).unwrap_err();
        assert!(matches!(
            err,
            NodeSubnetError::IndexOutOfRange { count: 256, .. }
        ));
        assert!(err.to_string().contains("10.244.0.0/16"));
        assert!(matches!(
            NodeSubnets::parse("10.244.0.0/16", 8),
            Err(NodeSubnetError::BadNodePrefix { max: 32, .. })
        ));
        assert!(matches!(
            NodeSubnets::parse("10.244.0.0/16", 33),
            Err(NodeSubnetError::BadNodePrefix { .. })
        ));
        assert!(matches!(
            NodeSubnets::parse("10.244.1.0/16", 24),
            Err(NodeSubnetError::HostBitsSet { .. })
        ));
        let err = NodeSubnets::parse("10.244.0.0/99", 24).unwrap_err();
        assert!(matches!(err, NodeSubnetError::InvalidCidr { .. }), "{err}");
        assert!(NodeSubnets::parse("banana", 24).is_err());
    }

    #[test]
    fn pool_skips_network_gateway_broadcast() {
        let p = Pool::new(net("10.0.0.0/28")).unwrap();
        assert_eq!(p.usable(), 13);
        assert_eq!(p.addr(p.first), "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(p.addr(p.last), "10.0.0.14".parse::<IpAddr>().unwrap());
        assert_eq!(p.gateway(), "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            p.reserved_role("10.0.0.15".parse().unwrap()),
            Some(ReservedRole::Broadcast)
        );
        assert_eq!(p.next(p.last), p.first);
        let p6 = Pool::new(net("fd00::/64")).unwrap();
        assert_eq!(p6.usable(), (1u128 << 64) - 2);
        assert_eq!(p6.addr(p6.first), "fd00::2".parse::<IpAddr>().unwrap());
        assert!(Pool::new(net("10.0.0.0/31")).is_none());
        assert!(Pool::new(net("fd00::/127")).is_none());
        assert_eq!(Pool::new(net("10.0.0.0/30")).unwrap().usable(), 1);
    }
}
