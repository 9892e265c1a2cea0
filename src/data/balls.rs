//! The built-in demo dataset: one to three shaded, anti-aliased balls in six colours on a plain light background.
//!
//! Nothing is stored: image `i` is rendered on demand from `(seed, i)`, so a "60000-image" dataset costs no
//! memory and no download, and two runs with the same seed see identical pixels. Scenes are laid out in unit
//! coordinates and only then rasterised, so the same `(seed, i)` is the same scene at 28, 32 or 64 pixels.
//!
//! What makes them read as balls rather than discs: Lambert shading plus a Blinn-Phong highlight from a light
//! at the upper left, and a soft contact shadow on the ground. Edges and highlights are anti-aliased by 2x2
//! supersampling with an analytic coverage term per sample, which keeps even 28x28 images smooth.
//!
//! The picture is kept simple enough for a DCGAN to draw it within minutes on a CPU: one background colour,
//! six hues at the corners of the colour wheel (with a little spread in saturation and brightness), and balls
//! a sixth to a quarter of the image across, so that even at 32x32 each is several pixels of one colour.
//! With every hue and background colour allowed and smaller balls, 2000 steps gave patchy multicoloured blobs.
//!
//! The label is the number of balls minus one (0, 1 or 2), which gives a conditional GAN something to
//! condition on.

use anyhow::{ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::Dataset;

/// Default number of images an epoch of `balls` has (MNIST-sized).
pub const DEFAULT_BALLS_LEN: usize = 60_000;

/// Number of ball hues, evenly spaced round the colour wheel: red, yellow, green, cyan, blue, magenta.
const HUES: usize = 6;

/// The ground every ball stands on: a light, slightly warm grey.
const BACKGROUND: [f32; 3] = [0.93, 0.9114, 0.8835];

#[derive(Clone, Copy, Debug)]
struct Ball {
    cx: f32,
    cy: f32,
    r: f32,
    rgb: [f32; 3],
}

#[derive(Clone, Debug)]
struct Scene {
    background: [f32; 3],
    balls: Vec<Ball>,
}

/// Procedural balls, `len` images of `size`x`size` with 1 (grey) or 3 (RGB) channels.
#[derive(Clone, Debug)]
pub struct BallsDataset {
    seed: u64,
    len: usize,
    size: usize,
    channels: usize,
}

impl BallsDataset {
    pub fn new(seed: u64, len: usize, size: usize, channels: usize) -> Result<Self> {
        ensure!(len > 0, "balls: the dataset length must be at least 1");
        ensure!(
            len <= crate::limits::MAX_BALLS,
            "balls:{len}: at most {} images (every epoch shuffles an index of them all)",
            crate::limits::MAX_BALLS
        );
        ensure!(
            (8..=4096).contains(&size),
            "balls: image size must be between 8 and 4096 pixels, got {size}"
        );
        ensure!(
            channels == 1 || channels == 3,
            "balls: channels must be 1 (grey) or 3 (RGB), got {channels}"
        );
        Ok(BallsDataset {
            seed,
            len,
            size,
            channels,
        })
    }

    /// Each image gets its own ChaCha stream, so image `i` never depends on which other images were drawn
    /// before it (random access, any worker thread, any order).
    fn scene(&self, index: usize) -> Scene {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(index as u64);

        let background = BACKGROUND;
        let n = rng.gen_range(1..=3usize);
        let mut balls: Vec<Ball> = Vec::with_capacity(n);
        for _ in 0..n {
            let r = rng.gen_range(0.16f32..0.26);
            let colour = hsv_to_rgb(
                rng.gen_range(0..HUES) as f32 / HUES as f32,
                rng.gen_range(0.70..0.85),
                rng.gen_range(0.80..0.90),
            );
            // Rejection sampling keeps balls from swallowing one another (a hidden ball would make the label
            // a lie); after a few tries we accept some overlap rather than loop forever.
            let margin = 0.02;
            let mut place = || {
                (
                    rng.gen_range(r + margin..1.0 - r - margin),
                    rng.gen_range(r + margin..1.0 - r - margin),
                )
            };
            let mut pos = place();
            for _ in 0..24 {
                let clear = balls.iter().all(|b| {
                    let (dx, dy) = (b.cx - pos.0, b.cy - pos.1);
                    (dx * dx + dy * dy).sqrt() > 0.8 * (b.r + r)
                });
                if clear {
                    break;
                }
                pos = place();
            }
            balls.push(Ball {
                cx: pos.0,
                cy: pos.1,
                r,
                rgb: colour,
            });
        }
        // Painter's order: a ball lower in the picture is nearer the viewer, so it is drawn last.
        balls.sort_by(|a, b| a.cy.total_cmp(&b.cy));
        Scene { background, balls }
    }

    /// Renders image `index` as CHW floats in `[-1, 1]` and returns it with its label.
    pub fn render(&self, index: usize) -> (Vec<f32>, u32) {
        let scene = self.scene(index);
        let s = self.size;
        let plane = s * s;
        let mut out = vec![f32::NAN; self.channels * plane];
        // 2x2 supersampling positions inside a pixel.
        const SUB: [(f32, f32); 4] = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)];
        let inv = 1.0 / s as f32;
        for y in 0..s {
            for x in 0..s {
                let mut acc = [0f32; 3];
                for (ox, oy) in SUB {
                    let c = shade(
                        &scene,
                        (x as f32 + ox) * inv,
                        (y as f32 + oy) * inv,
                        s as f32,
                    );
                    for k in 0..3 {
                        acc[k] += 0.25 * c[k];
                    }
                }
                let i = y * s + x;
                if self.channels == 3 {
                    for k in 0..3 {
                        out[k * plane + i] = to_signed(acc[k]);
                    }
                } else {
                    // ITU-R BT.601 luma, the weights PIL's convert("L") uses.
                    out[i] = to_signed(0.299 * acc[0] + 0.587 * acc[1] + 0.114 * acc[2]);
                }
            }
        }
        (out, (scene.balls.len() - 1) as u32)
    }
}

fn to_signed(v: f32) -> f32 {
    (v * 2.0 - 1.0).clamp(-1.0, 1.0)
}

/// Colour of the scene at unit coordinates `(u, v)`; `px` is the image size, used to make edge coverage one
/// supersample wide whatever the resolution.
fn shade(scene: &Scene, u: f32, v: f32, px: f32) -> [f32; 3] {
    let mut c = scene.background;
    // Contact shadows first: all of them darken the ground, before any ball is painted over it.
    let mut shadow = 0f32;
    for b in &scene.balls {
        let (ex, ey) = (
            (u - b.cx - 0.25 * b.r) / (1.05 * b.r),
            (v - b.cy - 0.80 * b.r) / (0.40 * b.r),
        );
        // Most of the picture is bare background: skip the square root outside the shadow's box.
        if ex.abs() >= 1.0 || ey.abs() >= 1.0 {
            continue;
        }
        let e = (ex * ex + ey * ey).sqrt();
        shadow = shadow.max(0.30 * (1.0 - smoothstep(0.2, 1.0, e)));
    }
    for ck in c.iter_mut() {
        *ck *= 1.0 - shadow;
    }

    let (l, h) = (&LIGHT.0, &LIGHT.1);
    for b in &scene.balls {
        let (nx, ny) = ((u - b.cx) / b.r, (v - b.cy) / b.r);
        // Outside the ball's box widened by the antialiasing band: nothing to paint.
        let reach = 1.0 + 1.0 / (b.r * px);
        if nx.abs() > reach || ny.abs() > reach {
            continue;
        }
        let d = (nx * nx + ny * ny).sqrt();
        // Signed distance to the rim in supersamples (half pixels), turned into a coverage in [0, 1].
        let coverage = (0.5 - (d - 1.0) * b.r * px * 2.0).clamp(0.0, 1.0);
        if coverage <= 0.0 {
            continue;
        }
        // At the rim (and in the antialiasing band just outside it) use the silhouette normal.
        let (nx, ny, nz) = if d < 1.0 {
            (nx, ny, (1.0 - d * d).sqrt())
        } else {
            (nx / d, ny / d, 0.0)
        };
        let diffuse = (nx * l[0] + ny * l[1] + nz * l[2]).max(0.0);
        let spec = (nx * h[0] + ny * h[1] + nz * h[2]).max(0.0).powi(36) * 0.65;
        // A faint bounce light from the ground keeps the unlit side from going flat black.
        let bounce = 0.12 * ny.max(0.0);
        for (ck, base) in c.iter_mut().zip(b.rgb) {
            let lit = base * (0.28 + 0.80 * diffuse + bounce) + spec;
            *ck = *ck * (1.0 - coverage) + lit.min(1.0) * coverage;
        }
    }
    c
}

/// The light direction (from the upper left, a little in front; the viewer looks down -z) and the Blinn
/// half-vector between it and the view direction, both unit length.
static LIGHT: std::sync::LazyLock<([f32; 3], [f32; 3])> = std::sync::LazyLock::new(|| {
    let norm = |v: [f32; 3]| {
        let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        [v[0] / n, v[1] / n, v[2] / n]
    };
    let l = norm([-0.48, -0.58, 0.66]);
    (l, norm([l[0], l[1], l[2] + 1.0]))
});

fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// HSV (all in `[0, 1]`) to RGB in `[0, 1]`.
fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.fract() * 6.0).min(5.999_999);
    let sector = h6 as u32;
    let f = h6 - sector as f32;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match sector {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

impl Dataset for BallsDataset {
    fn len(&self) -> usize {
        self.len
    }

    fn image_shape(&self) -> (usize, usize, usize) {
        (self.channels, self.size, self.size)
    }

    fn num_classes(&self) -> Option<usize> {
        Some(3)
    }

    fn get(&self, i: usize) -> Result<(Vec<f32>, Option<u32>)> {
        ensure!(
            i < self.len,
            "balls: index {i} out of range for a dataset of {} images",
            self.len
        );
        let (img, label) = self.render(i);
        Ok((img, Some(label)))
    }

    fn describe(&self) -> String {
        format!(
            "balls (procedural, seed {}, {} images, {}x{}x{})",
            self.seed, self.len, self.channels, self.size, self.size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_range_and_labels_for_each_size() {
        for &size in &[64usize, 32, 28, 17] {
            for &ch in &[3usize, 1] {
                let ds = BallsDataset::new(7, 1000, size, ch).unwrap();
                assert_eq!(ds.image_shape(), (ch, size, size));
                for i in [0usize, 1, 2, 999] {
                    let (img, label) = ds.get(i).unwrap();
                    assert_eq!(img.len(), ch * size * size);
                    assert!(img
                        .iter()
                        .all(|v| v.is_finite() && (-1.0..=1.0).contains(v)));
                    let label = label.unwrap();
                    assert!(label < 3);
                    assert_eq!(label as usize, ds.scene(i).balls.len() - 1);
                    // Not a blank image: the balls must stand out from the light background.
                    let min = img.iter().cloned().fold(f32::INFINITY, f32::min);
                    let max = img.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    assert!(
                        max > 0.6 && min < 0.3,
                        "size {size} ch {ch} i {i}: {min}..{max}"
                    );
                }
            }
        }
    }

    #[test]
    fn deterministic_per_seed_and_index() {
        let a = BallsDataset::new(42, 100, 32, 3).unwrap();
        let b = BallsDataset::new(42, 100, 32, 3).unwrap();
        // Order of access must not matter.
        let later = b.get(57).unwrap();
        assert_eq!(a.get(3).unwrap(), b.get(3).unwrap());
        assert_eq!(a.get(57).unwrap(), later);
        assert_ne!(a.get(3).unwrap().0, a.get(4).unwrap().0);
        let c = BallsDataset::new(43, 100, 32, 3).unwrap();
        assert_ne!(a.get(3).unwrap().0, c.get(3).unwrap().0);
    }

    #[test]
    fn grey_is_luma_of_rgb_and_scenes_are_resolution_independent() {
        let rgb = BallsDataset::new(5, 10, 28, 3).unwrap();
        let grey = BallsDataset::new(5, 10, 28, 1).unwrap();
        let (c, _) = rgb.get(4).unwrap();
        let (g, _) = grey.get(4).unwrap();
        let p = 28 * 28;
        for i in 0..p {
            let to01 = |x: f32| (x + 1.0) / 2.0;
            let y = 0.299 * to01(c[i]) + 0.587 * to01(c[p + i]) + 0.114 * to01(c[2 * p + i]);
            assert!((to01(g[i]) - y).abs() < 1e-5);
        }
        let big = BallsDataset::new(5, 10, 64, 3).unwrap();
        assert_eq!(rgb.get(4).unwrap().1, big.get(4).unwrap().1);
    }

    /// The simplifications that let a short run learn the set: one ground colour, six hues, balls at least a
    /// sixth of the picture across.
    #[test]
    fn one_background_six_hues_and_large_balls() {
        let ds = BallsDataset::new(3, 500, 32, 3).unwrap();
        let mut seen = [0usize; HUES];
        for i in 0..500 {
            let scene = ds.scene(i);
            assert_eq!(scene.background, BACKGROUND);
            for b in &scene.balls {
                assert!((0.16..0.26).contains(&b.r), "radius {}", b.r);
                let (max, min) = (
                    b.rgb.iter().cloned().fold(0.0, f32::max),
                    b.rgb.iter().cloned().fold(1.0, f32::min),
                );
                // Hue sectors of 60 degrees start at the primaries and secondaries: the hue is one of those
                // exactly when one channel is the max and one the min and the third equals one of them.
                let third = b.rgb.iter().filter(|&&c| c != max && c != min).count();
                assert_eq!(third, 0, "colour {:?} is not one of the six hues", b.rgb);
                let k = match (b.rgb[0] == max, b.rgb[1] == max, b.rgb[2] == max) {
                    (true, false, false) => 0,
                    (true, true, false) => 1,
                    (false, true, false) => 2,
                    (false, true, true) => 3,
                    (false, false, true) => 4,
                    _ => 5,
                };
                seen[k] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n > 100), "every hue appears: {seen:?}");
        // A corner far from every ball and shadow is the ground colour itself.
        let (img, _) = ds.get(0).unwrap();
        let corner: Vec<f32> = (0..3).map(|c| img[c * 1024]).collect();
        let want: Vec<f32> = BACKGROUND.iter().map(|&v| to_signed(v)).collect();
        let near = corner.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6);
        assert!(
            near || ds
                .scene(0)
                .balls
                .iter()
                .any(|b| b.cx - b.r < 0.1 && b.cy - b.r < 0.1),
            "{corner:?} vs {want:?}"
        );
    }

    #[test]
    fn label_distribution_covers_all_classes() {
        let ds = BallsDataset::new(1, 300, 8, 1).unwrap();
        let mut counts = [0usize; 3];
        for i in 0..300 {
            counts[ds.scene(i).balls.len() - 1] += 1;
        }
        assert!(counts.iter().all(|&n| n > 60), "{counts:?}");
    }

    #[test]
    fn bad_parameters_are_errors() {
        assert!(BallsDataset::new(0, 10, 4, 3).is_err());
        assert!(BallsDataset::new(0, 10, 32, 2).is_err());
        assert!(BallsDataset::new(0, 0, 32, 3).is_err());
        let ds = BallsDataset::new(0, 10, 32, 3).unwrap();
        assert!(format!("{:#}", ds.get(10).unwrap_err()).contains("out of range"));
    }
}
