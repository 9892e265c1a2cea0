//! Helpers shared by the integration tests; a test file that needs them says `mod common;`. Each test crate
//! uses only part of this module.
#![allow(dead_code)]

pub mod backend;
pub mod cli;
pub mod conv;
pub mod fixture;
pub mod idx;
pub mod model;
pub mod tc;
