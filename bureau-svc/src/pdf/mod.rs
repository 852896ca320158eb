//! The bill PDF: validation of a supplied one (in `fiscalbill_common::pdf`) and rendering.

pub mod amount;
pub mod render;
mod writer;
