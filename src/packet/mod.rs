//! The sans-IO packet fast path.
//!
//! | module | owns |
//! |---|---|
//! | [`wire`] | zero-copy packet views, checksums (full and RFC 1624 incremental), rewrites, generated replies |
//! | [`maglev`] | Maglev consistent-hashing lookup tables |

pub mod maglev;
pub mod wire;
