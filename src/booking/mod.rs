//! The booking: the seed's request schema and its one-pass check ([`schema`]), the pipeline that
//! takes an authenticated request to the MIS and back ([`pipeline`]), the normalization of the
//! MIS's answer ([`normalize`], pure) and the future that outlives its client (`run_to_end`).

pub mod appointment;
pub mod normalize;
pub mod pipeline;
pub(crate) mod run_to_end;
pub mod schema;

pub use schema::{
    Capture, Checked, DIRECTION, Field, Kind, REQUEST, check, parse, parse_guid, validate,
};
