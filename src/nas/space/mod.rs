//! Search spaces: each one's operations, its architecture format and (later) its network.

pub mod nb201;
