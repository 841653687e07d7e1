//! The persistent IPAM state and the changes that move it on.
//!
//! Every mutation goes through [`IpamState::apply`] with an [`IpamChange`], both
//! live and when a store replays its log after a restart, so the two can never
//! disagree. Changes carry their decisions (which address, which expiry time):
//! applying one reads no clock and makes no choice.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Who holds an allocation: the pod sandbox (container ID, pod UID...). One owner
/// holds at most one address per family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OwnerKey(pub String);

impl From<&str> for OwnerKey {
    fn from(s: &str) -> Self {
        OwnerKey(s.to_string())
    }
}

impl From<String> for OwnerKey {
    fn from(s: String) -> Self {
        OwnerKey(s)
    }
}

impl std::fmt::Display for OwnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The addresses of one owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    pub(crate) identity: Option<String>,
    pub(crate) v4: Option<Ipv4Addr>,
    pub(crate) v6: Option<Ipv6Addr>,
}

impl Lease {
    pub(crate) fn addrs(&self) -> impl Iterator<Item = IpAddr> {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(IpAddr::V6))
    }
}

/// The addresses a sticky identity keeps while none of its pods runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sticky {
    pub(crate) v4: Option<Ipv4Addr>,
    pub(crate) v6: Option<Ipv6Addr>,
}

/// Everything IPAM must remember across restarts. Opaque: a store only
/// serializes it (serde) and replays [`IpamChange`]s onto it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Persisted", try_from = "Persisted")]
pub struct IpamState {
    pub(crate) subnet_v4: Option<Ipv4Net>,
    pub(crate) subnet_v6: Option<Ipv6Net>,
    pub(crate) leases: HashMap<OwnerKey, Lease>,
    /// Index of `leases` by address.
    pub(crate) holders: HashMap<IpAddr, OwnerKey>,
    /// Released addresses and the wall-clock time (Unix ms) until which they rest.
    pub(crate) quarantine: HashMap<IpAddr, u64>,
    /// Index of `quarantine` by the end of the rest: a release forgets the
    /// ended ones from its front instead of looking at every resting
    /// address (which made releasing N pods cost N squared).
    pub(crate) quarantine_ends: BTreeSet<(u64, IpAddr)>,
    pub(crate) sticky: HashMap<String, Sticky>,
    /// Index of `sticky` by address.
    pub(crate) reserved: HashMap<IpAddr, String>,
    /// The last address handed out by round robin, per family.
    pub(crate) cursor_v4: Option<Ipv4Addr>,
    pub(crate) cursor_v6: Option<Ipv6Addr>,
}

/// One durable step of the IPAM state. Opaque: a store serializes it (serde) and
/// replays it with [`IpamState::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamChange(pub(crate) Change);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Change {
    /// The node subnets changed (or were recorded the first time): forget
    /// quarantine entries and cursors outside them.
    Configure {
        subnet_v4: Option<Ipv4Net>,
        subnet_v6: Option<Ipv6Net>,
    },
    /// `owner` now holds these addresses (merged with what it held); a sticky
    /// identity reserves them; the cursors move where round robin picked.
    Allocate {
        owner: OwnerKey,
        identity: Option<String>,
        v4: Option<Ipv4Addr>,
        v6: Option<Ipv6Addr>,
        cursor_v4: Option<Ipv4Addr>,
        cursor_v6: Option<Ipv6Addr>,
    },
    /// These owners let go; their addresses rest until `until_ms`; quarantine
    /// entries that ended by `now_ms` are forgotten.
    Release {
        owners: Vec<OwnerKey>,
        until_ms: u64,
        now_ms: u64,
    },
    /// The identity no longer keeps its addresses.
    ReleaseIdentity { identity: String },
}

/// A change that does not fit the state it is applied to: the log or the state
/// file was edited or written by a broken build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InconsistentState(pub(crate) String);

impl IpamState {
    /// Whether `change` fits this state; [`IpamState::apply`] fails exactly when this does.
    pub(crate) fn check(&self, change: &IpamChange) -> Result<(), InconsistentState> {
        let Change::Allocate {
            owner,
            identity,
            v4,
            v6,
            ..
        } = &change.0
        else {
            return Ok(());
        };
        let new: Vec<IpAddr> = v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(v6.map(IpAddr::V6))
            .collect();
        let old = self.leases.get(owner);
        if let Some(old) = old {
            if old.identity != *identity {
                return Err(InconsistentState(format!(
                    "owner {owner} changes identity from {:?} to {identity:?}",
                    old.identity
                )));
            }
            if v4.is_some() && old.v4.is_some() || v6.is_some() && old.v6.is_some() {
                return Err(InconsistentState(format!(
                    "owner {owner} is given a second address of one family"
                )));
            }
        }
        for a in &new {
            if let Some(holder) = self.holders.get(a) {
                return Err(InconsistentState(format!(
                    "{a} is given to {owner} while {holder} holds it"
                )));
            }
            if let Some(other) = self.reserved.get(a) {
                if identity.as_deref() != Some(other.as_str()) {
                    return Err(InconsistentState(format!(
                        "{a} is given to {owner} while identity {other} keeps it"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Moves the state on by `change`, or explains why the change does not fit.
    /// On error the state is unchanged.
    pub fn apply(&mut self, change: &IpamChange) -> Result<(), InconsistentState> {
        match &change.0 {
            Change::Configure {
                subnet_v4,
                subnet_v6,
            } => {
                self.subnet_v4 = *subnet_v4;
                self.subnet_v6 = *subnet_v6;
                let (v4, v6) = (*subnet_v4, *subnet_v6);
                let inside = move |a: &IpAddr| match a {
                    IpAddr::V4(a) => v4.is_some_and(|n| n.contains(a)),
                    IpAddr::V6(a) => v6.is_some_and(|n| n.contains(a)),
                };
                self.quarantine.retain(|a, _| inside(a));
                self.quarantine_ends.retain(|(_, a)| inside(a));
                if !self.cursor_v4.is_some_and(|a| inside(&IpAddr::V4(a))) {
                    self.cursor_v4 = None;
                }
                if !self.cursor_v6.is_some_and(|a| inside(&IpAddr::V6(a))) {
                    self.cursor_v6 = None;
                }
            }
            Change::Allocate {
                owner,
                identity,
                v4,
                v6,
                cursor_v4,
                cursor_v6,
            } => {
                self.check(change)?;
                let new: Vec<IpAddr> = v4
                    .map(IpAddr::V4)
                    .into_iter()
                    .chain(v6.map(IpAddr::V6))
                    .collect();
                let lease = self.leases.entry(owner.clone()).or_insert(Lease {
                    identity: identity.clone(),
                    v4: None,
                    v6: None,
                });
                lease.v4 = lease.v4.or(*v4);
                lease.v6 = lease.v6.or(*v6);
                for a in &new {
                    self.holders.insert(*a, owner.clone());
                    if let Some(until) = self.quarantine.remove(a) {
                        self.quarantine_ends.remove(&(until, *a));
                    }
                }
                if let Some(identity) = identity {
                    let sticky = self.sticky.entry(identity.clone()).or_default();
                    // An explicit address moves the identity's reservation for that family.
                    if let Some(a) = v4 {
                        if let Some(old) = sticky.v4.replace(*a) {
                            self.reserved.remove(&IpAddr::V4(old));
                        }
                    }
                    if let Some(a) = v6 {
                        if let Some(old) = sticky.v6.replace(*a) {
                            self.reserved.remove(&IpAddr::V6(old));
                        }
                    }
                    for a in &new {
                        self.reserved.insert(*a, identity.clone());
                    }
                }
                self.cursor_v4 = cursor_v4.or(self.cursor_v4);
                self.cursor_v6 = cursor_v6.or(self.cursor_v6);
            }
            Change::Release {
                owners,
                until_ms,
                now_ms,
            } => {
                for owner in owners {
                    if let Some(lease) = self.leases.remove(owner) {
                        for a in lease.addrs() {
                            self.holders.remove(&a);
                            let until = self.quarantine.entry(a).or_insert(0);
                            self.quarantine_ends.remove(&(*until, a));
                            *until = (*until).max(*until_ms);
                            self.quarantine_ends.insert((*until, a));
                        }
                    }
                }
                while let Some(&(until, a)) = self.quarantine_ends.first() {
                    if until > *now_ms {
                        break;
                    }
                    self.quarantine_ends.pop_first();
                    self.quarantine.remove(&a);
                }
            }
            Change::ReleaseIdentity { identity } => {
                if let Some(sticky) = self.sticky.remove(identity) {
                    for a in sticky
                        .v4
                        .map(IpAddr::V4)
                        .into_iter()
                        .chain(sticky.v6.map(IpAddr::V6))
                    {
                        self.reserved.remove(&a);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The serialized form: plain sorted lists, so files diff well and the indexes
/// are rebuilt (and checked) on load.
#[derive(Serialize, Deserialize)]
struct Persisted {
    subnet_v4: Option<Ipv4Net>,
    subnet_v6: Option<Ipv6Net>,
    leases: BTreeMap<OwnerKey, Lease>,
    quarantine: BTreeMap<IpAddr, u64>,
    sticky: BTreeMap<String, Sticky>,
    cursor_v4: Option<Ipv4Addr>,
    cursor_v6: Option<Ipv6Addr>,
}

impl From<IpamState> for Persisted {
    fn from(s: IpamState) -> Self {
        Persisted {
            subnet_v4: s.subnet_v4,
            subnet_v6: s.subnet_v6,
            leases: s.leases.into_iter().collect(),
            quarantine: s.quarantine.into_iter().collect(),
            sticky: s.sticky.into_iter().collect(),
            cursor_v4: s.cursor_v4,
            cursor_v6: s.cursor_v6,
        }
    }
}

impl TryFrom<Persisted> for IpamState {
    type Error = InconsistentState;

    fn try_from(p: Persisted) -> Result<Self, Self::Error> {
        let mut holders = HashMap::new();
        for (owner, lease) in &p.leases {
            for a in lease.addrs() {
                if let Some(other) = holders.insert(a, owner.clone()) {
                    return Err(InconsistentState(format!(
                        "{a} is held by both {other} and {owner}"
                    )));
                }
            }
        }
        let mut reserved = HashMap::new();
        for (identity, sticky) in &p.sticky {
            for a in sticky
                .v4
                .map(IpAddr::V4)
                .into_iter()
                .chain(sticky.v6.map(IpAddr::V6))
            {
                if let Some(other) = reserved.insert(a, identity.clone()) {
                    return Err(InconsistentState(format!(
                        "{a} is kept by both identities {other} and {identity}"
                    )));
                }
            }
        }
        Ok(IpamState {
            subnet_v4: p.subnet_v4,
            subnet_v6: p.subnet_v6,
            leases: p.leases.into_iter().collect(),
            holders,
            quarantine_ends: p.quarantine.iter().map(|(a, until)| (*until, *a)).collect(),
            quarantine: p.quarantine.into_iter().collect(),
            sticky: p.sticky.into_iter().collect(),
            reserved,
            cursor_v4: p.cursor_v4,
            cursor_v6: p.cursor_v6,
        })
    }
}
