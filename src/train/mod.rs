//! GAN training: the configuration ([`config`]), one iteration ([`gan`]), captured as a CUDA graph ([`graph`]),
//! and its objectives ([`losses`]), the
//! loop with its outputs and resume ([`run`]), and the glue to the data loader ([`data`]) and to the optimiser state in checkpoints
//! ([`optstate`]), and the guard of a run directory ([`rundir`]).

pub mod balance;
pub mod config;
pub mod data;
pub mod gan;
pub mod graph;
pub mod losses;
pub mod optstate;
pub mod run;
pub mod rundir;

pub use config::{Duration, LossKind, TrainConfig};
pub use gan::{Gan, StepMetrics};
pub use run::Trainer;
