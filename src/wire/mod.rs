//! Bytes on the wire: the strict JSON reader (duplicate keys kept visible, strings borrowed)
//! and writer shared by the booking check, normalization and the error shape, and the one hex
//! encoding.

pub mod hex;
pub mod json;
