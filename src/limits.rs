//! Upper bounds on the sizes that come from users and from files (flags, safetensors metadata, IDX headers,
//! .npy headers), all in one place. Each is checked before anything of that size is allocated, so a typo or a
//! hostile file ends in a clear error instead of an allocation failure (which aborts the process). The bounds
//! are far above anything this engine trains in practice (MNIST-scale GANs), yet far below what would exhaust
//! a workstation's memory.

/// Latent size (`--nz`, a checkpoint's `nz`).
pub const MAX_NZ: usize = 16_384;
/// Network widths: `--ngf`, `--ndf`, `--hidden`.
pub const MAX_WIDTH: usize = 16_384;
/// Classes of a conditional model.
pub const MAX_CLASSES: usize = 10_000;
/// Image height = width.
pub const MAX_IMAGE_SIZE: usize = 4096;
/// Image channels.
pub const MAX_CHANNELS: usize = 4;
/// Parameters and buffers of one network (G or D): 2^28 f32 values are 1 GiB.
pub const MAX_PARAMS: u128 = 1 << 28;
/// Images of the procedural `balls:N` dataset: its shuffle permutation holds 8 bytes per image.
pub const MAX_BALLS: usize = 10_000_000;
/// Bytes of pixels (or labels) of one IDX file; all of MNIST's training images are 47 MB.
pub const MAX_IDX_BYTES: u64 = 1 << 31;
/// Images of one `sample` call (`--n`, rows of `--z-npy`) and of a training sample grid (`--num-samples`).
pub const MAX_SAMPLES: usize = 65_536;
/// Images a generator makes in one forward pass; larger requests run in chunks of this many.
pub const GENERATE_CHUNK: usize = 256;
/// `interpolate --steps` and `sweep --steps`: images per grid row.
pub const MAX_STEPS: usize = 1024;
/// `interpolate --gif-size`: pixels of a GIF frame's larger side.
pub const MAX_GIF_SIZE: u32 = 4096;
/// Elements of a `.npy` array read from the user (latents).
pub const MAX_NPY_ELEMENTS: u64 = 1 << 28;
/// The largest magnitude a checkpoint may hold: a weight, BN statistic or optimiser moment beyond it means the
/// run diverged (its square overflows f32 at 1.8e19), and such a checkpoint would diverge again on resume.
pub const MAX_SAVED_ABS: f32 = 1e18;
