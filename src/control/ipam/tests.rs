//! Behaviour tests of the IPAM.
