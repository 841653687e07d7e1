//! Pod address allocation (see issue: IPAM).
