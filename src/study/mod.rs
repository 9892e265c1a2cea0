//! Studies of trained models: latent-space tools ([`latent`]).

pub mod latent;
