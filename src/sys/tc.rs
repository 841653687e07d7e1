//! Steering packets of an interface's ingress to another device with tc
//! (`clsact` qdisc, `u32` filters, `mirred egress redirect`), over netlink.
//!
//! podnetd uses this to hand the outward interface's packets for node
//! ports, LoadBalancer addresses, its source-NAT ports and ICMP to
//! `podnet0`, whose reader is the fast path, before the kernel delivers
//! them locally (where nothing listens) or drops them (forwarding off).
//!
//! Why u32 and not flower: u32 is in every kernel with tc (`flower` is a
//! module many kernels, this project's CI kernel included, do not have).
//! Its matches are offsets from the IP header, so the port matches assume
//! a 20-byte header and check that it is one (packets with IP options are
//! not steered, and are delivered by the kernel as usual) and that the
//! packet is not a later fragment.
//!
//! Every filter podnet adds lives at one priority of the `clsact` ingress
//! hook ([`PRIORITY`]), so podnet removes its own and nothing else; the
//! qdisc is removed only when no filter is left on it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use futures_util::StreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::packet_route::tc::{
    TcAction, TcActionAttribute, TcActionGeneric, TcActionMirror, TcActionMirrorOption,
    TcActionOption, TcActionType, TcAttribute, TcFilterU32Option, TcHandle, TcHeader, TcMessage,
    TcMirror, TcMirrorActionType, TcOption, TcU32Key, TcU32Selector, TcU32SelectorFlags,
};
use rtnetlink::packet_route::RouteNetlinkMessage;

use super::link::{self, LinkError};

/// The tc priority of podnet's filters.
pub const PRIORITY: u16 = 0x706e;

const ETH_P_IP: u16 = 0x0800;
/// `TC_H_CLSACT`: the parent of the clsact qdisc.
const CLSACT_PARENT: u32 = 0xffff_fff1;
/// `TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS)`.
const INGRESS_HOOK: u32 = 0xffff_fff2;
/// `TC_U32_ROOT`: the root hash table of a u32 filter, whoever numbered it.
const U32_ROOT: u32 = 0xfff0_0000;

/// What to steer: IPv4 packets whose destination matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Steer {
    /// Destination in the network (any protocol).
    Dst(Ipv4Net),
    /// Destination address and IP protocol.
    Proto {
        /// Destination address.
        dst: Ipv4Addr,
        /// IP protocol number.
        protocol: u8,
    },
    /// Destination address, TCP or UDP, destination port under a mask
    /// (`0xffff` for one port, `0xf000` for an aligned block of 4096).
    Port {
        /// Destination address.
        dst: Ipv4Addr,
        /// IP protocol number (6 or 17).
        protocol: u8,
        /// Destination port (the masked bits).
        port: u16,
        /// Which bits of the port must match.
        mask: u16,
    },
}

impl Steer {
    fn keys(&self) -> Vec<TcU32Key> {
        let key = |off: i32, mask: u32, val: u32| {
            let mut k = TcU32Key::default();
            k.off = off;
            k.mask = mask;
            k.val = val & mask;
            k
        };
        let dst = |a: Ipv4Addr, prefix: u8| {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            key(16, mask, a.to_bits())
        };
        match *self {
            Steer::Dst(net) => vec![dst(net.network(), net.prefix_len())],
            Steer::Proto { dst: a, protocol } => {
                vec![dst(a, 32), key(8, 0x00ff_0000, u32::from(protocol) << 16)]
            }
            Steer::Port {
                dst: a,
                protocol,
                port,
                mask,
            } => vec![
                dst(a, 32),
                key(8, 0x00ff_0000, u32::from(protocol) << 16),
                // A 20-byte header, so the port is where the match looks.
                key(0, 0x0f00_0000, 0x0500_0000),
                // Not a later fragment (offset 0): it carries the ports.
                key(4, 0x0000_1fff, 0),
                key(20, u32::from(mask), u32::from(port)),
            ],
        }
    }
}

/// Why steering could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    /// A device is missing or netlink failed.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The kernel refused a tc request.
    #[error("tc {op} on {ifname} failed: {source}; steering needs CAP_NET_ADMIN and a kernel with the clsact qdisc, the u32 classifier and the mirred action (CONFIG_NET_SCH_INGRESS, CONFIG_NET_CLS_U32, CONFIG_NET_ACT_MIRRED)")]
    Request {
        /// The operation.
        op: &'static str,
        /// The interface.
        ifname: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
}

/// The filters podnet keeps on one interface's ingress, redirecting to one
/// target device.
pub struct Redirect {
    ifname: String,
    target: String,
    installed: parking_lot::Mutex<Installed>,
}

#[derive(Default)]
struct Installed {
    filters: BTreeMap<Steer, u32>,
    next: u32,
}

impl Redirect {
    /// Adds a clsact qdisc to `ifname` if it has none and removes filters
    /// of podnet's priority left by an earlier run. Nothing is steered yet.
    pub fn start(ifname: &str, target: &str) -> Result<Redirect, TcError> {
        let index = link::index(ifname)? as i32;
        let r = Redirect {
            ifname: ifname.to_owned(),
            target: target.to_owned(),
            installed: Default::default(),
        };
        let header = tc_header(index, 0xffff_0000, CLSACT_PARENT, 0);
        let qdisc = TcMessage::from_parts(header, vec![TcAttribute::Kind("clsact".into())]);
        r.send(
            "add clsact qdisc",
            RouteNetlinkMessage::NewQueueDiscipline(qdisc),
            NLM_F_CREATE | NLM_F_EXCL,
            Some(libc::EEXIST),
        )?;
        r.delete_priority(index)?;
        Ok(r)
    }

    /// Makes the installed filters exactly `want`: adds the missing ones,
    /// deletes the others. A failure leaves what was done in place and is
    /// retried by the next call.
    pub fn sync(&self, want: &[Steer]) -> Result<(), TcError> {
        let index = link::index(&self.ifname)? as i32;
        let target = link::index(&self.target)?;
        let mut st = self.installed.lock();
        let gone: Vec<(Steer, u32)> = st
            .filters
            .iter()
            .filter(|(s, _)| !want.contains(s))
            .map(|(s, h)| (*s, *h))
            .collect();
        for (steer, handle) in gone {
            let mut header = filter_header(index);
            header.handle = TcHandle::from(U32_ROOT | handle);
            let msg = TcMessage::from_parts(header, vec![TcAttribute::Kind("u32".into())]);
            self.send(
                "delete filter",
                RouteNetlinkMessage::DelTrafficFilter(msg),
                0,
                Some(libc::ENOENT),
            )?;
            st.filters.remove(&steer);
        }
        for steer in want {
            if st.filters.contains_key(steer) {
                continue;
            }
            let used: std::collections::BTreeSet<u32> = st.filters.values().copied().collect();
            let handle = (1..0xfff)
                .map(|i| (st.next + i) % 0xfff + 1)
                .find(|h| !used.contains(h))
                .unwrap_or(1);
            st.next = handle;
            let mut header = filter_header(index);
            header.handle = TcHandle::from(handle);
            let msg = TcMessage::from_parts(
                header,
                vec![
                    TcAttribute::Kind("u32".into()),
                    TcAttribute::Options(vec![
                        TcOption::U32(TcFilterU32Option::Selector(selector(steer.keys()))),
                        TcOption::U32(TcFilterU32Option::Action(vec![mirred(target)])),
                    ]),
                ],
            );
            self.send(
                "add filter",
                RouteNetlinkMessage::NewTrafficFilter(msg),
                NLM_F_CREATE | NLM_F_EXCL,
                None,
            )?;
            st.filters.insert(*steer, handle);
        }
        Ok(())
    }

    /// Removes podnet's filters, and the clsact qdisc when no other filter
    /// is left on it. `Ok` when the interface is gone.
    pub fn remove(&self) -> Result<(), TcError> {
        let index = match link::index(&self.ifname) {
            Ok(i) => i as i32,
            Err(LinkError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        self.installed.lock().filters.clear();
        self.delete_priority(index)?;
        if self.ingress_filter_count(index)? == 0 {
            let header = tc_header(index, 0xffff_0000, CLSACT_PARENT, 0);
            let qdisc = TcMessage::from_parts(header, vec![TcAttribute::Kind("clsact".into())]);
            self.send(
                "delete clsact qdisc",
                RouteNetlinkMessage::DelQueueDiscipline(qdisc),
                0,
                Some(libc::ENOENT),
            )?;
        }
        Ok(())
    }

    /// The filters installed now (for tests and the log).
    pub fn installed(&self) -> Vec<Steer> {
        self.installed.lock().filters.keys().copied().collect()
    }

    fn delete_priority(&self, index: i32) -> Result<(), TcError> {
        let msg = TcMessage::from_parts(filter_header(index), vec![]);
        self.send(
            "delete podnet's filters",
            RouteNetlinkMessage::DelTrafficFilter(msg),
            0,
            Some(libc::ENOENT),
        )
    }

    fn ingress_filter_count(&self, index: i32) -> Result<usize, TcError> {
        let ifname = self.ifname.clone();
        link::with_netlink(|mut handle| async move {
            let header = tc_header(index, 0, INGRESS_HOOK, 0);
            let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetTrafficFilter(
                TcMessage::from_parts(header, vec![]),
            ));
            req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
            let mut count = 0;
            let mut responses = handle
                .request(req)
                .map_err(link::request("dump filters", &ifname))?;
            while let Some(msg) = responses.next().await {
                match msg.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewTrafficFilter(_)) => {
                        count += 1
                    }
                    NetlinkPayload::Error(e) => {
                        return Err(link::request("dump filters", &ifname)(
                            rtnetlink::Error::NetlinkError(e),
                        ))
                    }
                    _ => {}
                }
            }
            Ok(count)
        })
        .map_err(TcError::from)
    }

    fn send(
        &self,
        op: &'static str,
        message: RouteNetlinkMessage,
        flags: u16,
        ignore: Option<i32>,
    ) -> Result<(), TcError> {
        let ifname = self.ifname.clone();
        let result = link::with_netlink(|mut handle| async move {
            let mut req = NetlinkMessage::from(message);
            req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
            let mut responses = handle.request(req).map_err(link::request(op, &ifname))?;
            while let Some(msg) = responses.next().await {
                if let NetlinkPayload::Error(e) = msg.payload {
                    if e.code.is_some() {
                        return Err(link::request(op, &ifname)(rtnetlink::Error::NetlinkError(
                            e,
                        )));
                    }
                }
            }
            Ok(())
        });
        match result {
            Err(e) if ignore.is_some() && e.errno() == ignore => Ok(()),
            Err(LinkError::Request { source, .. }) => Err(TcError::Request {
                op,
                ifname: self.ifname.clone(),
                source,
            }),
            Err(e) => Err(e.into()),
            Ok(()) => Ok(()),
        }
    }
}

/// A filter message at podnet's priority on the ingress hook, for IPv4.
fn filter_header(index: i32) -> TcHeader {
    let info = u32::from(PRIORITY) << 16 | u32::from(ETH_P_IP.to_be());
    tc_header(index, 0, INGRESS_HOOK, info)
}

fn tc_header(index: i32, handle: u32, parent: u32, info: u32) -> TcHeader {
    TcHeader {
        index,
        handle: TcHandle::from(handle),
        parent: TcHandle::from(parent),
        info,
        ..Default::default()
    }
}

fn selector(keys: Vec<TcU32Key>) -> TcU32Selector {
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = keys.len() as u8;
    sel.keys = keys;
    sel
}

fn mirred(target: u32) -> TcAction {
    let mut m = TcMirror::default();
    m.generic = TcActionGeneric::default();
    m.generic.action = TcActionType::Stolen;
    m.eaction = TcMirrorActionType::EgressRedir;
    m.ifindex = target;
    let mut action = TcAction::default();
    action.tab = 1;
    action.attributes = vec![
        TcActionAttribute::Kind(TcActionMirror::KIND.to_string()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(m))]),
    ];
    action
}
