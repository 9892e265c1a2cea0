//! Writing results to disk: image grids ([`grid`]), NumPy `.npy` arrays ([`npy`]) and the crash-safe file
//! write every saver here (and the checkpoint code) goes through ([`atomic`]).

pub mod atomic;
pub mod fileset;
pub mod grid;
pub mod npy;

pub use atomic::{write_atomic, write_atomic_with};
pub use fileset::write_file_set;
pub use grid::{grid_image, make_grid, save_grid, save_png, GRID_PADDING};
pub use npy::{read_latents, read_npy, write_labels_npy, write_npy};
