//! Image grids, .npy (being written).
