//! Helpers shared by the integration tests; a test file that needs them says `mod common;`. Each test crate
//! uses only part of this module.
#![allow(dead_code)]

use gan_engine::Tensor;

pub mod backend;
pub mod cli;
pub mod conv;
pub mod fixture;
pub mod idx;
pub mod model;
pub mod tc;

/// A tensor's values as bit patterns, for comparisons that must tell −0 from +0 and NaN payloads apart.
pub fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec().unwrap().iter().map(|x| x.to_bits()).collect()
}
