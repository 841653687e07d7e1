//! Links, addresses and routes over netlink (rtnetlink), in the calling
//! thread's namespace.
//!
//! A netlink socket belongs to the namespace its creating thread was in, so
//! every call here opens its own socket on the calling thread, on a
//! current-thread tokio runtime that lives for that one call. Inside a pod, call
//! these within [`NetNs::run`](super::netns::NetNs::run). The daemon never needs
//! a long-lived runtime for configuration, and no call can leak into the wrong
//! namespace through a cached socket.
//!
//! Mutations are idempotent, so a daemon that restarts half-way through setting
//! up a pod simply does it again: adding what exists and deleting what is absent
//! both succeed.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// Errors of netlink operations.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No interface of that name in the calling thread's namespace.
    #[error("no network interface named {ifname:?} in this namespace; create it first (or check you are in the right namespace)")]
    NotFound { ifname: String },
    /// The tokio runtime or the NETLINK_ROUTE socket could not be set up.
    #[error("opening a NETLINK_ROUTE socket ({stage}) failed: {source}")]
    Socket {
        stage: &'static str,
        source: io::Error,
    },
    /// The kernel refused a request.
    #[error(
        "netlink {op} on {ifname} failed: {source}; configuring links needs root (CAP_NET_ADMIN)"
    )]
    Request {
        op: &'static str,
        ifname: String,
        source: rtnetlink::Error,
    },
}

impl LinkError {
    /// The errno the kernel answered with, if it was a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            LinkError::Request {
                source: rtnetlink::Error::NetlinkError(msg),
                ..
            } => Some(msg.raw_code().abs()),
            _ => None,
        }
    }
}

/// Sets the interface administratively up (`ip link set IF up`).
pub fn set_up(ifname: &str) -> Result<(), LinkError> {
    with_netlink(|handle| async move {
        let index = index_of(&handle, ifname).await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(request("set up", ifname))
    })
}

/// Sets the interface MTU (`ip link set IF mtu N`).
pub fn set_mtu(ifname: &str, mtu: u32) -> Result<(), LinkError> {
    with_netlink(|handle| async move {
        let index = index_of(&handle, ifname).await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
            .execute()
            .await
            .map_err(request("set mtu", ifname))
    })
}

/// Adds an address with its prefix (`ip addr add ADDR/LEN dev IF`); `Ok` if the
/// interface already has it.
pub fn add_address(ifname: &str, addr: IpNet) -> Result<(), LinkError> {
    with_netlink(|handle| async move {
        let index = index_of(&handle, ifname).await?;
        let added = handle
            .address()
            .add(index, addr.addr(), addr.prefix_len())
            .execute()
            .await
            .map_err(request("add address", ifname));
        ignore_errno(added, libc::EEXIST)
    })
}

/// Adds a device route (`ip route add DST dev IF`, scope link for IPv4); a
/// default route is `0.0.0.0/0` or `::/0`. `Ok` if a route to `dst` exists in
/// the main table (even through another device: this never replaces a route).
pub fn add_route(dst: IpNet, ifname: &str) -> Result<(), LinkError> {
    with_netlink(|handle| async move {
        let index = index_of(&handle, ifname).await?;
        let message = match dst.trunc() {
            IpNet::V4(net) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(net.addr(), net.prefix_len())
                .output_interface(index)
                .scope(RouteScope::Link)
                .build(),
            IpNet::V6(net) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(net.addr(), net.prefix_len())
                .output_interface(index)
                .build(),
        };
        let added = handle
            .route()
            .add(message)
            .execute()
            .await
            .map_err(request("add route", ifname));
        ignore_errno(added, libc::EEXIST)
    })
}

/// Deletes the route to `dst` through `ifname` (`ip route del DST dev IF`),
/// whoever added it; `Ok` if there is none or the interface is gone.
pub fn delete_route(dst: IpNet, ifname: &str) -> Result<(), LinkError> {
    with_netlink(|handle| async move {
        let index = match index_of(&handle, ifname).await {
            Ok(index) => index,
            // The kernel removed the device's routes with it.
            Err(LinkError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        // Like iproute2: scope "nowhere" and protocol "unspec" match any.
        let mut message = match dst.trunc() {
            IpNet::V4(net) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(net.addr(), net.prefix_len())
                .output_interface(index)
                .build(),
            IpNet::V6(net) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(net.addr(), net.prefix_len())
                .output_interface(index)
                .build(),
        };
        message.header.scope = RouteScope::NoWhere;
        message.header.protocol = RouteProtocol::Unspec;
        let deleted = handle
            .route()
            .del(message)
            .execute()
            .await
            .map_err(request("delete route", ifname));
        ignore_errno(deleted, libc::ESRCH)
    })
}

/// Deletes the interface (`ip link del IF`); `Ok` if it does not exist.
pub fn delete_link(ifname: &str) -> Result<(), LinkError> {
    with_netlink(|handle| async move {
        let index = match index_of(&handle, ifname).await {
            Ok(index) => index,
            Err(LinkError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let deleted = handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(request("delete link", ifname));
        ignore_errno(deleted, libc::ENODEV)
    })
}

/// Whether an interface of that name exists in this namespace.
pub fn exists(ifname: &str) -> Result<bool, LinkError> {
    match index(ifname) {
        Ok(_) => Ok(true),
        Err(LinkError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The interface index (`ifindex`).
pub fn index(ifname: &str) -> Result<u32, LinkError> {
    with_netlink(|handle| async move { index_of(&handle, ifname).await })
}

/// The interface of the IPv4 default route of the main table, if any (the
/// one with the lowest metric when there are several).
pub fn default_route_interface() -> Result<Option<String>, LinkError> {
    use rtnetlink::packet_route::route::{RouteAttribute, RouteType};
    with_netlink(|handle| async move {
        let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let mut routes = handle.route().get(filter).execute();
        let mut best: Option<(u32, u32)> = None;
        while let Some(route) = routes
            .try_next()
            .await
            .map_err(request("dump routes", "(all)"))?
        {
            if route.header.destination_prefix_length != 0
                || route.header.kind != RouteType::Unicast
                || route.header.table != 254
            {
                continue;
            }
            let mut oif = None;
            let mut metric = 0;
            for attr in &route.attributes {
                match attr {
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Priority(m) => metric = *m,
                    _ => {}
                }
            }
            if let Some(oif) = oif {
                if best.is_none_or(|(m, _)| metric < m) {
                    best = Some((metric, oif));
                }
            }
        }
        let Some((_, index)) = best else {
            return Ok(None);
        };
        let link = handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await
            .map_err(request("get link", "(default route)"))?;
        Ok(link.and_then(|l| {
            l.attributes.into_iter().find_map(|a| match a {
                rtnetlink::packet_route::link::LinkAttribute::IfName(n) => Some(n),
                _ => None,
            })
        }))
    })
}

/// Every address of this namespace, with the interface it is on (`ip
/// addr`), in the kernel's order (an interface's primary address first).
pub fn addresses() -> Result<Vec<(String, IpNet)>, LinkError> {
    use rtnetlink::packet_route::address::AddressAttribute;
    with_netlink(|handle| async move {
        let mut names = std::collections::HashMap::new();
        let mut links = handle.link().get().execute();
        while let Some(l) = links
            .try_next()
            .await
            .map_err(request("dump links", "(all)"))?
        {
            for a in l.attributes {
                if let rtnetlink::packet_route::link::LinkAttribute::IfName(n) = a {
                    names.insert(l.header.index, n);
                }
            }
        }
        let mut out = Vec::new();
        let mut addrs = handle.address().get().execute();
        while let Some(a) = addrs
            .try_next()
            .await
            .map_err(request("dump addresses", "(all)"))?
        {
            let prefix = a.header.prefix_len;
            let name = names.get(&a.header.index).cloned().unwrap_or_default();
            let local = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr {
                if let Ok(net) = IpNet::new(ip, prefix) {
                    out.push((name, net));
                }
            }
        }
        Ok(out)
    })
}

/// Runs one netlink conversation on a runtime and socket created on this thread.
pub(super) fn with_netlink<F, Fut, T>(f: F) -> Result<T, LinkError>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T, LinkError>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| LinkError::Socket {
            stage: "tokio runtime",
            source,
        })?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| LinkError::Socket {
                stage: "socket(AF_NETLINK, NETLINK_ROUTE)",
                source,
            })?;
        // The connection task ends when the runtime is dropped after this call.
        tokio::spawn(connection);
        f(handle).await
    })
}

pub(super) async fn index_of(handle: &Handle, ifname: &str) -> Result<u32, LinkError> {
    let not_found = || LinkError::NotFound {
        ifname: ifname.to_owned(),
    };
    if ifname.is_empty() || ifname.len() > super::tun::MAX_NAME_LEN {
        return Err(not_found());
    }
    let found = handle
        .link()
        .get()
        .match_name(ifname.to_owned())
        .execute()
        .try_next()
        .await;
    match found {
        Ok(Some(link)) => Ok(link.header.index),
        Ok(None) => Err(not_found()),
        Err(e) => {
            let err = request("get link", ifname)(e);
            match err.errno() {
                Some(libc::ENODEV) => Err(not_found()),
                _ => Err(err),
            }
        }
    }
}

pub(super) fn request<'a>(
    op: &'static str,
    ifname: &'a str,
) -> impl FnOnce(rtnetlink::Error) -> LinkError + 'a {
    move |source| LinkError::Request {
        op,
        ifname: ifname.to_owned(),
        source,
    }
}

pub(super) fn ignore_errno(result: Result<(), LinkError>, errno: i32) -> Result<(), LinkError> {
    match result {
        Err(e) if e.errno() == Some(errno) => Ok(()),
        other => other,
    }
}
