//! Pod address allocation (IPAM) from the node subnet.
//!
//! | module | owns |
//! |---|---|
//! | [`subnet`] | node subnets of a cluster CIDR; the usable range of a node subnet |
//! | `state` (private) | the persistent state and the changes that move it on |
//! | [`store`] | where the state lives: [`IpamStore`], [`FileStore`], [`MemoryStore`] |
//!
//! [`Ipam`] hands out addresses so that
//! * no address is ever held by two owners, and the network, gateway (first
//!   host) and IPv4 broadcast addresses are never handed out;
//! * an allocation or release returns only once it is written to the state
//!   log, so a crash of the process at any moment loses nothing that was
//!   acknowledged ([`FileStore`]); a power loss loses nothing either under
//!   [`SyncPolicy::Always`], and at most the last 50 ms under the default
//!   [`SyncPolicy::Periodic`] (see [`crate::control::store::sync`]);
//! * a released address rests in quarantine (30 s by default) and round robin
//!   walks forward from the last address handed out, so a new pod does not
//!   inherit the connections of the one that just died;
//! * a sticky identity (a StatefulSet pod name) gets its own address back, even
//!   from quarantine, until [`Ipam::release_identity`];
//! * asking twice for the same owner gives the same answer, and releasing
//!   twice, or releasing an unknown owner, is harmless.
//!
//! Time is an argument (`now`), so tests are deterministic. Quarantine ends are
//! stored as wall-clock times, so they survive a restart.
//!
//! Allocation walks forward from the cursor and skips addresses that are held,
//! reserved or resting by hash lookups; it stops after one more step than there
//! are such addresses, so a /64 is never scanned and a /24 costs at most 253
//! lookups.

pub mod store;
pub mod subnet;

mod state;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub use state::{InconsistentState, IpamChange, IpamState, OwnerKey};
pub use store::{FileStore, IpamStore, MemoryStore, StoreError, SyncPolicy, DEFAULT_STATE_DIR};
pub use subnet::{Family, NodeSubnetError, NodeSubnets, ReservedRole};

use state::{Change, Lease};
use subnet::{to_u128, Pool};

/// The default time a released address rests before it is handed out again.
pub const DEFAULT_QUARANTINE: Duration = Duration::from_secs(30);

/// What the node hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// The node's IPv4 pod subnet, if it runs IPv4.
    pub subnet_v4: Option<Ipv4Net>,
    /// The node's IPv6 pod subnet, if it runs IPv6.
    pub subnet_v6: Option<Ipv6Net>,
    /// How long a released address rests before another owner may get it.
    pub quarantine: Duration,
}

impl Default for IpamConfig {
    /// Node 0 of the default cluster: 10.244.0.0/24 and fd00:10:244::/64.
    fn default() -> Self {
        IpamConfig {
            subnet_v4: Some(Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 24).unwrap_or_default()),
            subnet_v6: Some(
                Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 0), 64)
                    .unwrap_or_default(),
            ),
            quarantine: DEFAULT_QUARANTINE,
        }
    }
}

/// Which families an allocation wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Families {
    /// One address of every family the node has a subnet for.
    #[default]
    Configured,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
    /// Both; an error if the node lacks either subnet.
    DualStack,
}

/// A request for addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocateRequest {
    /// Who will hold the addresses.
    pub owner: OwnerKey,
    /// A stable identity (e.g. `namespace/statefulset-0`) that keeps its
    /// addresses across owners until [`Ipam::release_identity`].
    pub identity: Option<String>,
    /// The families wanted.
    pub families: Families,
    /// A specific address instead of the next free one; its family must be
    /// among `families`.
    pub address: Option<IpAddr>,
}

impl AllocateRequest {
    /// One address of every configured family for `owner`.
    pub fn new(owner: impl Into<OwnerKey>) -> AllocateRequest {
        AllocateRequest {
            owner: owner.into(),
            identity: None,
            families: Families::Configured,
            address: None,
        }
    }

    /// With a sticky identity.
    pub fn identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// With the families wanted.
    pub fn families(mut self, families: Families) -> Self {
        self.families = families;
        self
    }

    /// With a specific address.
    pub fn address(mut self, address: IpAddr) -> Self {
        self.address = Some(address);
        self
    }
}

/// The addresses one owner holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Allocation {
    /// The owner.
    pub owner: OwnerKey,
    /// Its sticky identity, if any.
    pub identity: Option<String>,
    /// Its IPv4 address, if any.
    pub v4: Option<Ipv4Addr>,
    /// Its IPv6 address, if any.
    pub v6: Option<Ipv6Addr>,
}

impl Allocation {
    fn new(owner: &OwnerKey, lease: &Lease) -> Allocation {
        Allocation {
            owner: owner.clone(),
            identity: lease.identity.clone(),
            v4: lease.v4,
            v6: lease.v6,
        }
    }

    /// All addresses, IPv4 first.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.map(IpAddr::V6))
    }
}

/// What one release let go of (the addresses are now in quarantine).
pub type Released = Allocation;

/// How a node subnet is used at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// The node subnet.
    pub subnet: IpNet,
    /// Addresses that can be handed out at all.
    pub usable: u128,
    /// Addresses held by owners.
    pub in_use: u64,
    /// Released addresses still resting, not held.
    pub quarantined: u64,
    /// Addresses kept for sticky identities with no running owner, not resting.
    pub reserved: u64,
}

/// Why [`Ipam::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Neither an IPv4 nor an IPv6 subnet was configured.
    #[error("no pod subnet configured; set an IPv4 and/or an IPv6 node subnet")]
    NoSubnet,
    /// A configured subnet has host bits set.
    #[error("pod subnet {subnet} has host bits set; did you mean {}?", subnet.trunc())]
    HostBitsSet {
        /// The subnet given.
        subnet: IpNet,
    },
    /// A configured subnet leaves no address to hand out.
    #[error("pod subnet {subnet} is too small: after the network, gateway and broadcast addresses nothing is left; use at most /30 for IPv4 or /126 for IPv6")]
    SubnetTooSmall {
        /// The subnet given.
        subnet: IpNet,
    },
    /// The stored state holds addresses outside the configured subnets.
    #[error("the node subnet changed from {stored} to {configured}, but {count} stored address(es) lie outside it (e.g. {example}); go back to {stored} and release those pods (and sticky identities) first, or move the IPAM state away")]
    SubnetChanged {
        /// The subnet in the state, or "none".
        stored: String,
        /// The configured subnet, or "none".
        configured: String,
        /// How many held or reserved addresses fall outside.
        count: usize,
        /// One of them, with its holder.
        example: String,
    },
}

/// Why [`Ipam::allocate`] failed. Nothing was allocated.
#[derive(Debug, thiserror::Error)]
pub enum AllocateError {
    /// A family was asked for that the node has no subnet for.
    #[error("{family} address requested for {owner}, but this node has no {family} pod subnet; configure one or ask for the other family")]
    NoSubnet {
        /// The family.
        family: Family,
        /// The requesting owner.
        owner: OwnerKey,
    },
    /// Every usable address is held, resting or reserved.
    #[error("pod subnet {} is exhausted: {} usable addresses, {} in use, {} in quarantine, {} reserved for sticky identities; delete pods, release unused identities (StatefulSet pods keep theirs), or give the node a larger subnet", usage.subnet, usage.usable, usage.in_use, usage.quarantined, usage.reserved)]
    Exhausted {
        /// The subnet and its counts.
        usage: PoolUsage,
    },
    /// The specific address asked for is held by another owner.
    #[error("{address} is already held by {owner}; release it from that owner or ask for another address")]
    AddressTaken {
        /// The address.
        address: IpAddr,
        /// Who holds it.
        owner: OwnerKey,
    },
    /// The specific address asked for is kept for another sticky identity.
    #[error("{address} is kept for identity {identity}; release that identity first or ask for another address")]
    AddressReserved {
        /// The address.
        address: IpAddr,
        /// The identity keeping it.
        identity: String,
    },
    /// The specific address asked for was released too recently.
    #[error("{address} was released recently and rests for another {} ms; ask again later or ask for another address", remaining.as_millis())]
    AddressQuarantined {
        /// The address.
        address: IpAddr,
        /// How long until it may be handed out.
        remaining: Duration,
    },
    /// The specific address asked for is not in the node subnet.
    #[error(
        "{address} is outside this node's pod subnets ({subnets}); ask for an address inside them"
    )]
    OutsideSubnet {
        /// The address.
        address: IpAddr,
        /// The configured subnets.
        subnets: String,
    },
    /// The specific address asked for is the network, gateway or broadcast address.
    #[error(
        "{address} is the {role} of {subnet} and is never handed out; ask for another address"
    )]
    NotUsable {
        /// The address.
        address: IpAddr,
        /// What it is.
        role: ReservedRole,
        /// Its subnet.
        subnet: IpNet,
    },
    /// The specific address is of a family the request does not ask for.
    #[error(
        "{address} is an {family} address but the request asks for {families:?}; make them agree"
    )]
    FamilyMismatch {
        /// The address.
        address: IpAddr,
        /// Its family.
        family: Family,
        /// What the request asks for.
        families: Families,
    },
    /// The sticky identity's address is held by another owner of the same identity.
    #[error("identity {identity} keeps {address}, but {owner} still holds it; release {owner} first (the old pod of this identity)")]
    IdentityHeld {
        /// The identity.
        identity: String,
        /// Its address.
        address: IpAddr,
        /// The owner holding it.
        owner: OwnerKey,
    },
    /// The owner already holds an allocation that contradicts the request.
    #[error("{owner} already holds {held:?} with identity {identity:?}, which contradicts this request; release it first")]
    OwnerConflict {
        /// The owner.
        owner: OwnerKey,
        /// What it holds.
        held: Vec<IpAddr>,
        /// Its recorded identity.
        identity: Option<String>,
    },
    /// The allocation could not be stored; it was not made.
    #[error("could not store the allocation, nothing was allocated: {0}")]
    Store(#[from] StoreError),
}

/// Why a release or garbage collection failed. Nothing was released.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The release could not be stored; the addresses stay allocated.
    #[error("could not store the release, the addresses stay allocated; retry: {0}")]
    Store(#[from] StoreError),
}

/// The node's pod address allocator. Not internally synchronized: the daemon
/// owns one and serializes calls (allocations are sub-millisecond).
pub struct Ipam {
    config: IpamConfig,
    pool_v4: Option<Pool>,
    pool_v6: Option<Pool>,
    state: IpamState,
    store: Box<dyn IpamStore>,
}

impl std::fmt::Debug for Ipam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ipam")
            .field("config", &self.config)
            .field("owners", &self.state.leases.len())
            .finish_non_exhaustive()
    }
}

impl Ipam {
    /// What opening had to drop from damaged state files, one message each
    /// naming the file; taken once (see [`IpamStore::take_repairs`]).
    pub fn take_store_repairs(&mut self) -> Vec<String> {
        self.store.take_repairs()
    }

    /// Loads the state from `store` and checks it against `config`.
    pub fn open(mut store: Box<dyn IpamStore>, config: IpamConfig) -> Result<Ipam, OpenError> {
        let pool = |subnet: IpNet| {
            if subnet != subnet.trunc() {
                return Err(OpenError::HostBitsSet { subnet });
            }
            Pool::new(subnet).ok_or(OpenError::SubnetTooSmall { subnet })
        };
        let pool_v4 = config.subnet_v4.map(|n| pool(n.into())).transpose()?;
        let pool_v6 = config.subnet_v6.map(|n| pool(n.into())).transpose()?;
        if pool_v4.is_none() && pool_v6.is_none() {
            return Err(OpenError::NoSubnet);
        }
        let state = store.load()?.unwrap_or_default();
        let mut ipam = Ipam {
            config,
            pool_v4,
            pool_v6,
            state,
            store,
        };
        ipam.check_subnets()?;
        if ipam.state.subnet_v4 != ipam.config.subnet_v4
            || ipam.state.subnet_v6 != ipam.config.subnet_v6
        {
            let change = IpamChange(Change::Configure {
                subnet_v4: ipam.config.subnet_v4,
                subnet_v6: ipam.config.subnet_v6,
            });
            ipam.commit(change)?;
        }
        Ok(ipam)
    }

    /// Refuses a configuration that would orphan held or reserved addresses.
    fn check_subnets(&self) -> Result<(), OpenError> {
        let held = self
            .state
            .leases
            .iter()
            .flat_map(|(o, l)| l.addrs().map(move |a| (a, format!("held by {o}"))));
        let kept = self.state.sticky.iter().flat_map(|(i, s)| {
            s.v4.map(IpAddr::V4)
                .into_iter()
                .chain(s.v6.map(IpAddr::V6))
                .map(move |a| (a, format!("kept for identity {i}")))
        });
        let mut outside: Vec<(IpAddr, String)> = held
            .chain(kept)
            .filter(|(a, _)| !self.pool(Family::of(*a)).is_some_and(|p| p.is_usable(*a)))
            .collect();
        outside.sort();
        let Some((addr, who)) = outside.first() else {
            return Ok(());
        };
        let show = |n: Option<IpNet>| n.map_or("none".to_string(), |n| n.to_string());
        let (stored, configured) = match Family::of(*addr) {
            Family::V4 => (
                show(self.state.subnet_v4.map(IpNet::V4)),
                show(self.config.subnet_v4.map(IpNet::V4)),
            ),
            Family::V6 => (
                show(self.state.subnet_v6.map(IpNet::V6)),
                show(self.config.subnet_v6.map(IpNet::V6)),
            ),
        };
        Err(OpenError::SubnetChanged {
            stored,
            configured,
            count: outside.len(),
            example: format!("{addr} {who}"),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &IpamConfig {
        &self.config
    }

    /// The gateway (first host) address of the node subnet of `family`.
    pub fn gateway(&self, family: Family) -> Option<IpAddr> {
        self.pool(family).map(Pool::gateway)
    }

    /// Gives `request.owner` its addresses, or the ones it already holds.
    ///
    /// Returns only after the allocation is durable.
    pub fn allocate(
        &mut self,
        request: AllocateRequest,
        now: SystemTime,
    ) -> Result<Allocation, AllocateError> {
        let now_ms = unix_ms(now);
        let wanted = self.wanted_families(&request)?;
        let AllocateRequest {
            owner,
            identity,
            address,
            ..
        } = request;

        let held = self.state.leases.get(&owner);
        if let Some(lease) = held {
            let contradicts = lease.identity != identity
                || address.is_some_and(|a| {
                    let mine = match a {
                        IpAddr::V4(_) => lease.v4.map(IpAddr::V4),
                        IpAddr::V6(_) => lease.v6.map(IpAddr::V6),
                    };
                    mine.is_some_and(|m| m != a)
                });
            if contradicts {
                return Err(AllocateError::OwnerConflict {
                    owner,
                    held: lease.addrs().collect(),
                    identity: lease.identity.clone(),
                });
            }
        }
        let has = |family: Family| {
            held.is_some_and(|l| match family {
                Family::V4 => l.v4.is_some(),
                Family::V6 => l.v6.is_some(),
            })
        };

        let mut picked: [Option<(u128, bool)>; 2] = [None, None];
        for family in wanted {
            if has(family) {
                continue;
            }
            let explicit = address.filter(|a| Family::of(*a) == family);
            picked[family as usize] =
                Some(self.pick(family, &owner, identity.as_deref(), explicit, now_ms)?);
        }
        let [p4, p6] = picked;
        if p4.is_none() && p6.is_none() {
            if let Some(lease) = held {
                return Ok(Allocation::new(&owner, lease));
            }
        }
        let v4 = p4.map(|(n, _)| Ipv4Addr::from(n as u32));
        let v6 = p6.map(|(n, _)| Ipv6Addr::from(n));
        let change = IpamChange(Change::Allocate {
            owner: owner.clone(),
            identity,
            v4,
            v6,
            cursor_v4: p4.filter(|p| p.1).and(v4),
            cursor_v6: p6.filter(|p| p.1).and(v6),
        });
        self.commit(change)?;
        // The change was applied, so the lease exists; the fallback only avoids a panic.
        Ok(self.get(&owner).unwrap_or(Allocation {
            owner,
            identity: None,
            v4,
            v6,
        }))
    }

    fn wanted_families(&self, request: &AllocateRequest) -> Result<Vec<Family>, AllocateError> {
        let configured: Vec<Family> = [Family::V4, Family::V6]
            .into_iter()
            .filter(|f| self.pool(*f).is_some())
            .collect();
        let wanted = match request.families {
            Families::Configured => configured.clone(),
            Families::V4 => vec![Family::V4],
            Families::V6 => vec![Family::V6],
            Families::DualStack => vec![Family::V4, Family::V6],
        };
        if let Some(family) = wanted.iter().find(|f| !configured.contains(f)) {
            return Err(AllocateError::NoSubnet {
                family: *family,
                owner: request.owner.clone(),
            });
        }
        if let Some(address) = request.address {
            let family = Family::of(address);
            if !wanted.contains(&family) {
                return Err(AllocateError::FamilyMismatch {
                    address,
                    family,
                    families: request.families,
                });
            }
        }
        Ok(wanted)
    }

    /// Chooses one address of `family`; the flag says it came from round robin.
    fn pick(
        &self,
        family: Family,
        owner: &OwnerKey,
        identity: Option<&str>,
        explicit: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<(u128, bool), AllocateError> {
        let pool = self.pool(family).ok_or_else(|| AllocateError::NoSubnet {
            family,
            owner: owner.clone(),
        })?;
        let kept = identity
            .and_then(|i| self.state.sticky.get(i))
            .and_then(|s| match family {
                Family::V4 => s.v4.map(IpAddr::V4),
                Family::V6 => s.v6.map(IpAddr::V6),
            });
        if let Some(address) = explicit {
            return self
                .check_explicit(pool, address, kept, now_ms)
                .map(|n| (n, false));
        }
        if let (Some(address), Some(identity)) = (kept, identity) {
            // A kept address outside the pool cannot happen: open() refuses such a config.
            if let Some(holder) = self.state.holders.get(&address) {
                return Err(AllocateError::IdentityHeld {
                    identity: identity.to_string(),
                    address,
                    owner: holder.clone(),
                });
            }
            return Ok((to_u128(address), false));
        }
        self.round_robin(pool, now_ms).map(|n| (n, true))
    }

    fn check_explicit(
        &self,
        pool: &Pool,
        address: IpAddr,
        kept: Option<IpAddr>,
        now_ms: u64,
    ) -> Result<u128, AllocateError> {
        if !pool.contains(address) {
            return Err(AllocateError::OutsideSubnet {
                address,
                subnets: self.subnets_text(),
            });
        }
        if let Some(role) = pool.reserved_role(address) {
            return Err(AllocateError::NotUsable {
                address,
                role,
                subnet: pool.subnet,
            });
        }
        if let Some(owner) = self.state.holders.get(&address) {
            return Err(AllocateError::AddressTaken {
                address,
                owner: owner.clone(),
            });
        }
        if kept == Some(address) {
            // The identity's own address: quarantine does not apply to it.
            return Ok(to_u128(address));
        }
        if let Some(identity) = self.state.reserved.get(&address) {
            return Err(AllocateError::AddressReserved {
                address,
                identity: identity.clone(),
            });
        }
        if let Some(&until) = self.state.quarantine.get(&address) {
            if until > now_ms {
                return Err(AllocateError::AddressQuarantined {
                    address,
                    remaining: Duration::from_millis(until - now_ms),
                });
            }
        }
        Ok(to_u128(address))
    }

    /// The next free address after the cursor, wrapping.
    fn round_robin(&self, pool: &Pool, now_ms: u64) -> Result<u128, AllocateError> {
        let s = &self.state;
        let blocked = |n: u128| {
            let a = pool.addr(n);
            s.holders.contains_key(&a)
                || s.reserved.contains_key(&a)
                || s.quarantine.get(&a).is_some_and(|&until| until > now_ms)
        };
        // Among blocked+1 distinct addresses at least one is free, so the walk is
        // bounded by what is blocked, never by the size of the subnet.
        let blocking = (s.holders.len() + s.reserved.len() + s.quarantine.len()) as u128;
        let steps = pool.usable().min(blocking.saturating_add(1));
        let cursor = match pool.family {
            Family::V4 => s.cursor_v4.map(IpAddr::V4),
            Family::V6 => s.cursor_v6.map(IpAddr::V6),
        };
        let mut n = cursor.map_or(pool.last, to_u128);
        for _ in 0..steps {
            n = pool.next(n);
            if !blocked(n) {
                return Ok(n);
            }
        }
        // Nothing free: rather than stall until a quarantine ends, the
        // address that has rested longest is reused (a pod that asked for
        // an address gets one; the quarantine only protects against the
        // reuse of a just-released address where there is a choice).
        let oldest = s
            .quarantine
            .iter()
            .filter(|(a, _)| {
                pool.subnet.contains(*a)
                    && !s.holders.contains_key(*a)
                    && !s.reserved.contains_key(*a)
            })
            .min_by_key(|(a, until)| (**until, **a));
        if let Some((&address, &until)) = oldest {
            tracing::warn!(
                %address,
                quarantine_left_ms = until.saturating_sub(now_ms),
                subnet = %pool.subnet,
                "pod subnet full: reusing the address whose quarantine is oldest"
            );
            return Ok(to_u128(address));
        }
        Err(AllocateError::Exhausted {
            usage: self.usage_of(pool, now_ms),
        })
    }

    /// Lets go of `owner`'s addresses; they rest in quarantine. Unknown owners are
    /// fine (`Ok(None)`), so a repeated release is harmless. The owner's sticky
    /// identity keeps its addresses.
    ///
    /// Returns only after the release is durable.
    pub fn release(
        &mut self,
        owner: &OwnerKey,
        now: SystemTime,
    ) -> Result<Option<Released>, ReleaseError> {
        let mut released = self.release_owners(vec![owner.clone()], now, false)?;
        Ok(released.pop())
    }

    /// Releases every owner for which `is_alive` says false (pods that died while
    /// the daemon was down), and forgets quarantine entries that have ended.
    pub fn gc(
        &mut self,
        is_alive: impl Fn(&OwnerKey) -> bool,
        now: SystemTime,
    ) -> Result<Vec<Released>, ReleaseError> {
        let mut dead: Vec<OwnerKey> = self
            .state
            .leases
            .keys()
            .filter(|o| !is_alive(o))
            .cloned()
            .collect();
        dead.sort();
        self.release_owners(dead, now, true)
    }

    fn release_owners(
        &mut self,
        owners: Vec<OwnerKey>,
        now: SystemTime,
        prune: bool,
    ) -> Result<Vec<Released>, ReleaseError> {
        let now_ms = unix_ms(now);
        let released: Vec<Released> = owners
            .iter()
            .filter_map(|o| self.state.leases.get(o).map(|l| Allocation::new(o, l)))
            .collect();
        let expired = prune
            && (self.state.quarantine_ends.first()).is_some_and(|&(until, _)| until <= now_ms);
        if released.is_empty() && !expired {
            return Ok(Vec::new());
        }
        let quarantine_ms = u64::try_from(self.config.quarantine.as_millis()).unwrap_or(u64::MAX);
        let change = IpamChange(Change::Release {
            owners: released.iter().map(|r| r.owner.clone()).collect(),
            until_ms: now_ms.saturating_add(quarantine_ms),
            now_ms,
        });
        self.commit(change)?;
        Ok(released)
    }

    /// Stops keeping addresses for a sticky identity (its StatefulSet pod was
    /// deleted for good). An owner holding one keeps it. Returns whether the
    /// identity was known.
    pub fn release_identity(&mut self, identity: &str) -> Result<bool, ReleaseError> {
        if !self.state.sticky.contains_key(identity) {
            return Ok(false);
        }
        let change = IpamChange(Change::ReleaseIdentity {
            identity: identity.to_string(),
        });
        self.commit(change)?;
        Ok(true)
    }

    /// What `owner` holds.
    pub fn get(&self, owner: &OwnerKey) -> Option<Allocation> {
        self.state
            .leases
            .get(owner)
            .map(|l| Allocation::new(owner, l))
    }

    /// Every allocation, ordered by owner.
    pub fn list(&self) -> Vec<Allocation> {
        let mut all: Vec<Allocation> = self
            .state
            .leases
            .iter()
            .map(|(o, l)| Allocation::new(o, l))
            .collect();
        all.sort_by(|a, b| a.owner.cmp(&b.owner));
        all
    }

    /// Sticky identities and the addresses they keep, ordered by identity.
    pub fn identities(&self) -> Vec<(String, Vec<IpAddr>)> {
        let mut all: Vec<(String, Vec<IpAddr>)> = self
            .state
            .sticky
            .iter()
            .map(|(i, s)| {
                let addrs = s.v4.map(IpAddr::V4).into_iter().chain(s.v6.map(IpAddr::V6));
                (i.clone(), addrs.collect())
            })
            .collect();
        all.sort();
        all
    }

    /// How the node subnet of `family` is used at `now`.
    pub fn usage(&self, family: Family, now: SystemTime) -> Option<PoolUsage> {
        self.pool(family).map(|p| self.usage_of(p, unix_ms(now)))
    }

    fn usage_of(&self, pool: &Pool, now_ms: u64) -> PoolUsage {
        let s = &self.state;
        let mine = |a: &&IpAddr| pool.contains(**a);
        let resting = |a: &IpAddr| s.quarantine.get(a).is_some_and(|&u| u > now_ms);
        let in_use = s.holders.keys().filter(mine).count() as u64;
        let quarantined = s
            .quarantine
            .keys()
            .filter(mine)
            .filter(|a| resting(a) && !s.holders.contains_key(a))
            .count() as u64;
        let reserved = s
            .reserved
            .keys()
            .filter(mine)
            .filter(|a| !resting(a) && !s.holders.contains_key(a))
            .count() as u64;
        PoolUsage {
            subnet: pool.subnet,
            usable: pool.usable(),
            in_use,
            quarantined,
            reserved,
        }
    }

    fn pool(&self, family: Family) -> Option<&Pool> {
        match family {
            Family::V4 => self.pool_v4.as_ref(),
            Family::V6 => self.pool_v6.as_ref(),
        }
    }

    fn subnets_text(&self) -> String {
        let nets: Vec<String> = [self.pool_v4, self.pool_v6]
            .iter()
            .flatten()
            .map(|p| p.subnet.to_string())
            .collect();
        nets.join(", ")
    }

    /// Stores `change`, then applies it: memory never runs ahead of the disk.
    fn commit(&mut self, change: IpamChange) -> Result<(), StoreError> {
        // Checked before storing, so a change the store accepted is never refused
        // here. The callers checked everything `check` does; failing it is a bug,
        // reported rather than panicking the daemon.
        let bug = |e: InconsistentState| StoreError::Corrupt {
            path: "<in-memory state>".into(),
            reason: e.to_string(),
        };
        self.state.check(&change).map_err(bug)?;
        self.store.commit(&self.state, &change)?;
        self.state.apply(&change).map_err(bug)
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
