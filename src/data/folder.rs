//! A directory (searched recursively) of PNG / JPEG pictures, centre-cropped to a square and resized to the
//! model's resolution.
//!
//! Opening only lists the files and reads each one's *header* (in parallel), which is cheap even for a large
//! folder; the pixels are decoded lazily by [`Dataset::get`], i.e. in the loader's worker threads while the
//! previous batch trains. Files whose header cannot be read are dropped at open time and reported in one
//! warning line. A file that passes the header check but fails to decode later (truncated body) is replaced
//! by the next readable picture, deterministically, with one warning the first time it happens; either way a
//! bad file never aborts a training run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{bail, ensure, Context, Result};
use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageReader, Rgb, Rgb32FImage};
use rayon::prelude::*;

use super::Dataset;

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// How many neighbours [`FolderDataset::get`] tries before giving up on a run of undecodable files.
const MAX_SUBSTITUTES: usize = 16;

pub struct FolderDataset {
    root: PathBuf,
    files: Vec<PathBuf>,
    size: usize,
    channels: usize,
    skipped_at_open: usize,
    decode_failures: AtomicUsize,
    warned: AtomicBool,
}

/// All files under `dir` with an image extension, sorted so the dataset order (and so the shuffled batch
/// order) is the same on every run and every machine.
fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", d.display()))?;
            let path = entry.path();
            // file_type() does not follow symlinks, so a link back up the tree cannot make this loop forever;
            // linked *files* are still taken (is_file follows the link).
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(path);
            } else if path.is_file() && has_image_extension(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Reads just enough of a file to know it is a picture we can decode. The format is sniffed from the bytes,
/// so a PNG saved as `.jpg` still works.
fn probe(path: &Path) -> Result<()> {
    let (w, h) = ImageReader::open(path)?
        .with_guessed_format()?
        .into_dimensions()?;
    ensure!(w > 0 && h > 0, "empty image ({w}x{h})");
    Ok(())
}

impl FolderDataset {
    /// Lists and header-checks the pictures under `dir` using `threads` threads.
    pub fn open(dir: &Path, size: usize, channels: usize, threads: usize) -> Result<FolderDataset> {
        ensure!(
            (8..=4096).contains(&size),
            "folder {}: image size must be between 8 and 4096 pixels, got {size}",
            dir.display()
        );
        ensure!(
            channels == 1 || channels == 3,
            "folder {}: channels must be 1 (grey) or 3 (RGB), got {channels}",
            dir.display()
        );
        if !dir.exists() {
            bail!("image folder {} does not exist", dir.display());
        }
        ensure!(dir.is_dir(), "{} is not a directory", dir.display());
        let candidates = list_images(dir)?;
        ensure!(
            !candidates.is_empty(),
            "no PNG or JPEG images found under {}",
            dir.display()
        );

        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .build()
            .context("cannot start the folder scan threads")?;
        let checked: Vec<Result<()>> =
            pool.install(|| candidates.par_iter().map(|p| probe(p)).collect());
        let mut files = Vec::with_capacity(candidates.len());
        let mut first_bad: Option<String> = None;
        for (path, r) in candidates.iter().zip(checked) {
            match r {
                Ok(()) => files.push(path.clone()),
                Err(e) => {
                    first_bad.get_or_insert_with(|| format!("{}: {e:#}", path.display()));
                }
            }
        }
        let skipped = candidates.len() - files.len();
        if files.is_empty() {
            bail!(
                "none of the {} image files under {} could be read (e.g. {})",
                candidates.len(),
                dir.display(),
                first_bad.unwrap_or_default()
            );
        }
        if skipped > 0 {
            eprintln!(
                "warning: skipped {skipped} of {} image files under {} that could not be read (e.g. {})",
                candidates.len(),
                dir.display(),
                first_bad.unwrap_or_default()
            );
        }
        Ok(FolderDataset {
            root: dir.to_path_buf(),
            files,
            size,
            channels,
            skipped_at_open: skipped,
            decode_failures: AtomicUsize::new(0),
            warned: AtomicBool::new(false),
        })
    }

    /// The pictures in dataset order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Files dropped at open time because their header was unreadable.
    pub fn skipped_at_open(&self) -> usize {
        self.skipped_at_open
    }

    /// Decode failures met since opening (each one was replaced by a neighbouring picture).
    pub fn decode_failures(&self) -> usize {
        self.decode_failures.load(Ordering::Relaxed)
    }

    /// Decodes and prepares one picture: composite any transparency onto white (transparent pixels' colours
    /// are arbitrary, often black), crop the centre square, shrink, convert to `[-1, 1]` CHW.
    fn load(&self, path: &Path) -> Result<Vec<f32>> {
        let bytes = std::fs::read(path)?;
        let reader = ImageReader::new(std::io::Cursor::new(&bytes)).with_guessed_format()?;
        // The JPEG decoder fills a truncated scan with grey instead of failing; the missing end-of-image
        // marker (FF D9, after which only padding may follow) gives the truncation away.
        if reader.format() == Some(image::ImageFormat::Jpeg) {
            let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            ensure!(
                bytes[..end].ends_with(&[0xFF, 0xD9]),
                "truncated JPEG (no end-of-image marker)"
            );
        }
        let img = reader.decode()?;
        let (w, h) = (img.width(), img.height());
        let side = w.min(h);
        let mut img = img.crop_imm((w - side) / 2, (h - side) / 2, side, side);
        let target = self.size as u32;
        // Lanczos cost grows with the shrink factor; a box-filtered pre-shrink to twice the target (which
        // averages, so it does not alias) keeps a 12-megapixel photo cheap without visible loss.
        if side > 4 * target {
            img = img.thumbnail_exact(2 * target, 2 * target);
        }
        let rgb = flatten_on_white(&img);
        let rgb = if rgb.width() == target {
            rgb
        } else {
            imageops::resize(&rgb, target, target, FilterType::Lanczos3)
        };
        let plane = (target * target) as usize;
        let mut out = vec![f32::NAN; self.channels * plane];
        for (i, p) in rgb.pixels().enumerate() {
            // Lanczos rings slightly outside [0, 1] at hard edges.
            let [r, g, b] = p.0.map(|v| v.clamp(0.0, 1.0));
            if self.channels == 3 {
                out[i] = r * 2.0 - 1.0;
                out[plane + i] = g * 2.0 - 1.0;
                out[2 * plane + i] = b * 2.0 - 1.0;
            } else {
                out[i] = (0.299 * r + 0.587 * g + 0.114 * b) * 2.0 - 1.0;
            }
        }
        Ok(out)
    }
}

fn flatten_on_white(img: &DynamicImage) -> Rgb32FImage {
    if !img.color().has_alpha() {
        return img.to_rgb32f();
    }
    let rgba = img.to_rgba32f();
    Rgb32FImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let a = a.clamp(0.0, 1.0);
        Rgb([r * a + 1.0 - a, g * a + 1.0 - a, b * a + 1.0 - a])
    })
}

impl Dataset for FolderDataset {
    fn problems(&self) -> Option<String> {
        match self.decode_failures() {
            0 => None,
            n => Some(format!(
                "{n} picture loads under {} failed to decode and were replaced by the next picture",
                self.root.display()
            )),
        }
    }

    fn len(&self) -> usize {
        self.files.len()
    }

    fn image_shape(&self) -> (usize, usize, usize) {
        (self.channels, self.size, self.size)
    }

    fn num_classes(&self) -> Option<usize> {
        None
    }

    fn get(&self, i: usize) -> Result<(Vec<f32>, Option<u32>)> {
        let n = self.files.len();
        ensure!(i < n, "folder: index {i} out of range for {n} images");
        let mut last_err = None;
        for k in 0..MAX_SUBSTITUTES.min(n) {
            let path = &self.files[(i + k) % n];
            match self.load(path) {
                Ok(x) => return Ok((x, None)),
                Err(e) => {
                    self.decode_failures.fetch_add(1, Ordering::Relaxed);
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        eprintln!(
                            "warning: cannot decode {}: {e:#}; using the next picture instead (further \
                             failures are counted, not printed)",
                            path.display()
                        );
                    }
                    last_err = Some(e.context(format!("cannot decode {}", path.display())));
                }
            }
        }
        Err(last_err
            .expect("at least one attempt was made")
            .context(format!(
                "{} consecutive undecodable pictures from index {i} under {}",
                MAX_SUBSTITUTES.min(n),
                self.root.display()
            )))
    }

    fn describe(&self) -> String {
        format!(
            "folder {} ({} images, {}x{}x{}{})",
            self.root.display(),
            self.files.len(),
            self.channels,
            self.size,
            self.size,
            if self.skipped_at_open > 0 {
                format!(", {} unreadable skipped", self.skipped_at_open)
            } else {
                String::new()
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, RgbImage, Rgba, RgbaImage};

    /// A folder with: a wide red/blue PNG, a tall grey JPEG in a subdirectory, a big PNG, a half-transparent
    /// PNG, a text file (ignored: not an image extension), a corrupt "PNG" and a truncated PNG.
    fn make_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // 40x20: left quarter red, middle half blue, right quarter red -> the centre crop is all blue.
        RgbImage::from_fn(40, 20, |x, _| {
            if (10..30).contains(&x) {
                Rgb([0, 0, 255])
            } else {
                Rgb([255, 0, 0])
            }
        })
        .save(d.join("a_wide.png"))
        .unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        GrayImage::from_pixel(30, 50, Luma([200]))
            .save(d.join("sub/b_tall.JPG"))
            .unwrap();
        RgbImage::from_fn(300, 300, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]))
            .save(d.join("c_big.png"))
            .unwrap();
        RgbaImage::from_pixel(16, 16, Rgba([0, 0, 0, 0]))
            .save(d.join("d_transparent.png"))
            .unwrap();
        std::fs::write(d.join("notes.txt"), "not a picture").unwrap();
        std::fs::write(d.join("e_corrupt.png"), b"this is not a png at all").unwrap();
        // A valid header whose pixel data is cut off: passes the open-time probe, fails to decode.
        let mut png = Vec::new();
        RgbImage::from_fn(64, 64, |x, y| Rgb([x as u8, y as u8, (x ^ y) as u8]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        std::fs::write(d.join("f_truncated.png"), &png[..png.len() / 2]).unwrap();
        dir
    }

    #[test]
    fn loads_crops_resizes_and_skips_bad_files() {
        let dir = make_folder();
        let ds = FolderDataset::open(dir.path(), 16, 3, 2).unwrap();
        let names: Vec<String> = ds
            .files()
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        // Sorted, recursive, corrupt one dropped, text file ignored.
        assert_eq!(
            names,
            [
                "a_wide.png",
                "c_big.png",
                "d_transparent.png",
                "f_truncated.png",
                "sub/b_tall.JPG"
            ]
        );
        assert_eq!(ds.skipped_at_open(), 1);
        assert!(ds.describe().contains("1 unreadable skipped"));
        assert_eq!((ds.image_shape(), ds.num_classes()), ((3, 16, 16), None));

        let plane = 256;
        let (a, l) = ds.get(0).unwrap();
        assert_eq!((a.len(), l), (3 * plane, None));
        // Centre crop of the wide image is pure blue.
        assert!(
            a[..plane].iter().all(|v| (v + 1.0).abs() < 1e-3),
            "red channel should be -1"
        );
        assert!(
            a[2 * plane..].iter().all(|v| (v - 1.0).abs() < 1e-3),
            "blue channel should be 1"
        );

        let (c, _) = ds.get(1).unwrap();
        assert!(c.iter().all(|v| (-1.0..=1.0).contains(v)));
        // Fully transparent -> white.
        let (t, _) = ds.get(2).unwrap();
        assert!(t.iter().all(|v| (v - 1.0).abs() < 1e-5));
        // Grey JPEG replicated to RGB, ~200/255.
        let (b, _) = ds.get(4).unwrap();
        let want = 200.0 / 255.0 * 2.0 - 1.0;
        assert!(b.iter().all(|v| (v - want).abs() < 0.03), "{:?}", &b[..4]);

        // The truncated file is replaced by the next picture (index 4), counted, not fatal.
        assert_eq!(ds.decode_failures(), 0);
        let (sub, _) = ds.get(3).unwrap();
        assert_eq!(sub, b);
        assert_eq!(ds.decode_failures(), 1);
    }

    #[test]
    fn a_truncated_jpeg_is_a_decode_failure() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::RgbImage::from_fn(64, 64, |x, y| Rgb([x as u8 * 4, y as u8 * 4, 9]));
        let mut jpg = vec![];
        img.write_to(
            &mut std::io::Cursor::new(&mut jpg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        std::fs::write(dir.path().join("a.jpg"), &jpg).unwrap();
        std::fs::write(dir.path().join("b.jpg"), &jpg[..jpg.len() * 2 / 3]).unwrap();
        let ds = FolderDataset::open(dir.path(), 32, 3, 1).unwrap();
        let a = ds.get(0).unwrap().0;
        // b.jpg is replaced by the next picture (a.jpg), and counted.
        assert_eq!(ds.get(1).unwrap().0, a);
        assert_eq!(ds.decode_failures(), 1);
        assert!(ds.problems().unwrap().contains("1 picture loads"));
    }

    #[test]
    fn grey_output_is_luma() {
        let dir = make_folder();
        let ds = FolderDataset::open(dir.path(), 12, 1, 1).unwrap();
        let (a, _) = ds.get(0).unwrap();
        assert_eq!(a.len(), 144);
        let blue_luma = 0.114 * 2.0 - 1.0;
        assert!(
            a.iter().all(|v| (v - blue_luma).abs() < 1e-3),
            "{:?}",
            &a[..3]
        );
    }

    #[test]
    fn empty_missing_and_all_bad_folders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = format!(
            "{:#}",
            FolderDataset::open(dir.path(), 32, 3, 1).err().unwrap()
        );
        assert!(
            e.contains("no PNG or JPEG") && e.contains(&dir.path().display().to_string()),
            "{e}"
        );

        let missing = dir.path().join("nope");
        let e = format!(
            "{:#}",
            FolderDataset::open(&missing, 32, 3, 1).err().unwrap()
        );
        assert!(e.contains("does not exist") && e.contains("nope"), "{e}");

        std::fs::write(dir.path().join("x.jpg"), b"garbage").unwrap();
        let e = format!(
            "{:#}",
            FolderDataset::open(dir.path(), 32, 3, 1).err().unwrap()
        );
        assert!(e.contains("none of the 1 image files"), "{e}");
    }
}
