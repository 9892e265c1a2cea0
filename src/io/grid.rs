//! Sample grids: a batch of images `[B, C, H, W]` in `[-1, 1]` tiled into one picture, the way
//! `torchvision.utils.save_image(x, normalize=True, value_range=(-1, 1))` does it, so our sample sheets can be
//! compared side by side with a PyTorch run's.
//!
//! Layout (as in `make_grid`): `min(nrow, B)` images per row, `ceil(B / nrow)` rows, every image surrounded by
//! `padding` pixels of black that are shared between neighbours, so a grid is
//! `(cols * (W + p) + p) x (rows * (H + p) + p)` pixels.

use std::io::Cursor;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use image::{ImageFormat, Rgb, RgbImage};

use crate::tensor::Tensor;

use super::atomic::write_atomic;

/// The padding torchvision uses by default.
pub const GRID_PADDING: usize = 2;

/// Maps a value in `[-1, 1]` to a byte: `(x + 1) / 2` clamped to `[0, 1]`, scaled and rounded like
/// torchvision's `mul(255).add_(0.5).clamp_(0, 255)`. NaN (a diverged generator) shows as black rather than
/// failing the save, because a sample sheet is most useful exactly when training has gone wrong.
fn to_byte(x: f32) -> u8 {
    if x.is_nan() {
        return 0;
    }
    let v = ((x + 1.0) * 0.5).clamp(0.0, 1.0);
    (v * 255.0 + 0.5).floor().min(255.0) as u8
}

/// Tiles `images` (`[B, C, H, W]`, C = 1 or 3, values in `[-1, 1]`) into one RGB picture with `nrow`
/// images per row and `padding` black pixels around each. Grey images are replicated to RGB.
pub fn make_grid(images: &Tensor, nrow: usize, padding: usize) -> Result<RgbImage> {
    let [b, c, h, w] = images.dims4("make_grid")?;
    ensure!(
        c == 1 || c == 3,
        "make_grid: images must have 1 or 3 channels, got {c} (shape {:?})",
        images.shape()
    );
    ensure!(
        b > 0 && h > 0 && w > 0,
        "make_grid: empty batch {:?}",
        images.shape()
    );
    ensure!(nrow > 0, "make_grid: nrow must be at least 1");
    let data = images.to_vec().context("make_grid: reading the images")?;

    let cols = nrow.min(b);
    let rows = b.div_ceil(cols);
    let (gw, gh) = (
        cols * (w + padding) + padding,
        rows * (h + padding) + padding,
    );
    ensure!(
        gw <= u32::MAX as usize && gh <= u32::MAX as usize,
        "make_grid: grid {gw}x{gh} is too large"
    );
    let mut grid = RgbImage::from_pixel(gw as u32, gh as u32, Rgb([0, 0, 0]));
    let plane = h * w;
    for (k, img) in data.chunks_exact(c * plane).enumerate() {
        let x0 = (k % cols) * (w + padding) + padding;
        let y0 = (k / cols) * (h + padding) + padding;
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                let px = if c == 1 {
                    let g = to_byte(img[i]);
                    [g, g, g]
                } else {
                    [
                        to_byte(img[i]),
                        to_byte(img[plane + i]),
                        to_byte(img[2 * plane + i]),
                    ]
                };
                grid.put_pixel((x0 + x) as u32, (y0 + y) as u32, Rgb(px));
            }
        }
    }
    Ok(grid)
}

/// [`make_grid`] with torchvision's default padding; the picture a GIF frame is made of.
pub fn grid_image(images: &Tensor, nrow: usize) -> Result<RgbImage> {
    make_grid(images, nrow, GRID_PADDING)
}

/// Encodes `img` as PNG and writes it atomically (see [`write_atomic`]).
pub fn save_png(img: &RgbImage, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .with_context(|| format!("cannot encode PNG for {}", path.display()))?;
    write_atomic(path, &bytes)
}

/// Saves a batch as a PNG grid (`nrow` images per row, 2-pixel padding), atomically.
pub fn save_grid(images: &Tensor, path: impl AsRef<Path>, nrow: usize) -> Result<()> {
    let path = path.as_ref();
    let grid = grid_image(images, nrow).with_context(|| format!("saving {}", path.display()))?;
    save_png(&grid, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;

    fn batch(b: usize, c: usize, h: usize, w: usize, f: impl Fn(usize) -> f32) -> Tensor {
        let data = (0..b * c * h * w).map(f).collect();
        Tensor::from_vec(data, &[b, c, h, w], &Device::Cpu).unwrap()
    }

    #[test]
    fn grid_size_matches_torchvision() {
        let t = batch(10, 1, 28, 28, |_| 0.0);
        let g = grid_image(&t, 5).unwrap();
        assert_eq!((g.width(), g.height()), (2 + 5 * 30, 2 + 2 * 30));
        // Fewer images than nrow: one row just wide enough. Awkward sizes, partial last row.
        let t = batch(3, 3, 7, 11, |_| 0.0);
        let g = grid_image(&t, 8).unwrap();
        assert_eq!((g.width(), g.height()), (2 + 3 * 13, 2 + 9));
        let t = batch(7, 3, 5, 6, |_| 0.0);
        let g = make_grid(&t, 3, 1).unwrap();
        assert_eq!((g.width(), g.height()), (1 + 3 * 7, 1 + 3 * 6));
    }

    #[test]
    fn pixels_land_in_the_right_cells_with_the_right_values() {
        // Image k is filled with a value that identifies it; each channel is offset so swaps would show.
        let (b, c, h, w) = (5usize, 3usize, 4usize, 3usize);
        let val = |k: usize, ch: usize| -1.0 + 0.1 * k as f32 + 0.3 * ch as f32;
        let t = batch(b, c, h, w, |i| {
            let k = i / (c * h * w);
            let ch = (i / (h * w)) % c;
            val(k, ch)
        });
        let g = make_grid(&t, 2, 2).unwrap();
        for k in 0..b {
            let (x0, y0) = ((k % 2) * (w + 2) + 2, (k / 2) * (h + 2) + 2);
            for (dx, dy) in [(0, 0), (w - 1, h - 1)] {
                let px = g.get_pixel((x0 + dx) as u32, (y0 + dy) as u32);
                for ch in 0..3 {
                    assert_eq!(px[ch], to_byte(val(k, ch)), "image {k} channel {ch}");
                }
            }
        }
        // Padding and the empty sixth cell stay black.
        assert_eq!(g.get_pixel(0, 0), &Rgb([0, 0, 0]));
        assert_eq!(
            g.get_pixel((w + 2 + 2) as u32, (2 * (h + 2) + 2) as u32),
            &Rgb([0, 0, 0])
        );
    }

    #[test]
    fn value_mapping_and_clamping() {
        assert_eq!(to_byte(-1.0), 0);
        assert_eq!(to_byte(1.0), 255);
        assert_eq!(to_byte(0.0), 128); // 127.5 + 0.5 rounds up, as in torchvision
        assert_eq!(to_byte(-7.0), 0);
        assert_eq!(to_byte(3.0), 255);
        assert_eq!(to_byte(f32::NAN), 0);
        let t = batch(1, 1, 1, 2, |i| [f32::INFINITY, f32::NEG_INFINITY][i]);
        let g = make_grid(&t, 1, 0).unwrap();
        assert_eq!(g.get_pixel(0, 0), &Rgb([255, 255, 255]));
        assert_eq!(g.get_pixel(1, 0), &Rgb([0, 0, 0]));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let t = batch(2, 2, 4, 4, |_| 0.0);
        assert!(format!("{:#}", make_grid(&t, 2, 2).unwrap_err()).contains("1 or 3 channels"));
        let t = Tensor::from_vec(vec![0.0; 12], &[3, 4], &Device::Cpu).unwrap();
        assert!(make_grid(&t, 2, 2).is_err());
        let t = batch(2, 3, 4, 4, |_| 0.0);
        assert!(make_grid(&t, 0, 2).is_err());
    }

    #[test]
    fn save_grid_writes_a_readable_png() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("grid.png");
        let t = batch(10, 1, 28, 28, |i| ((i % 97) as f32 / 48.0) - 1.0);
        save_grid(&t, &p, 5).unwrap();
        let back = image::open(&p).unwrap().to_rgb8();
        assert_eq!(back, grid_image(&t, 5).unwrap());
        assert_eq!((back.width(), back.height()), (152, 62));
    }
}
