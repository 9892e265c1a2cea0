//! MNIST and Fashion-MNIST in their IDX file format (raw or gzip-compressed).
//!
//! An IDX file is a big-endian header (magic `0x00000803` = unsigned bytes, 3 dimensions, for images;
//! `0x00000801` for labels) followed by the raw bytes. Both datasets ship the same four files, so one reader
//! serves both. Everything is validated before use: a wrong file, a truncated download or a train/test mix-up
//! is reported with the file's name instead of producing garbage batches.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use flate2::read::GzDecoder;
use image::imageops::{self, FilterType};
use image::{ImageBuffer, Luma};
use serde::{Deserialize, Serialize};

use super::Dataset;
use crate::limits;

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;
/// Classes of MNIST and of Fashion-MNIST.
const MNIST_CLASSES: u8 = 10;

/// Which half of MNIST: the 60000 training images (`train-*`) or the 10000 test images (`t10k-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// The contents of an IDX image file: `count` images of `rows` x `cols` bytes, row-major, back to back.
#[derive(Clone, Debug)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// An IDX file opened for reading: gunzipped on the fly if it starts with the gzip magic (the extension is not
/// trusted: some mirrors serve decompressed files under `.gz` names and vice versa). Streaming, so the header is
/// checked before the body is read and a small `.gz` that inflates to gigabytes costs no more than its header
/// allows.
fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut file, &mut magic)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let whole = head.chain(file);
    Ok(if magic[..n] == [0x1f, 0x8b] {
        Box::new(GzDecoder::new(whole))
    } else {
        Box::new(whole)
    })
}

/// Fills `buf` as far as the stream goes; returns how many bytes were read.
fn read_up_to(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reads the `len`-byte header of an IDX file of kind `want`, checking its magic number (naming the file and,
/// when the magic belongs to the other kind of IDX file, saying so).
fn read_header(r: &mut dyn Read, path: &Path, want: u32, len: usize) -> Result<Vec<u8>> {
    let what = if want == IMAGES_MAGIC {
        "image"
    } else {
        "label"
    };
    let mut bytes = vec![0u8; len];
    let n = read_up_to(r, &mut bytes)
        .with_context(|| format!("{}: corrupt or truncated gzip data", path.display()))?;
    ensure!(
        n >= 4,
        "{}: file too short ({n} bytes) to be an MNIST {what} file",
        path.display()
    );
    let magic = be_u32(&bytes, 0);
    if magic != want {
        let hint = match magic {
            IMAGES_MAGIC => " (it is an image file; were the image and label files swapped?)",
            LABELS_MAGIC => " (it is a label file; were the image and label files swapped?)",
            _ => "",
        };
        bail!(
            "bad IDX magic {magic:#010x} in {}: not an MNIST {what} file{hint}",
            path.display()
        );
    }
    ensure!(
        n == len,
        "{}: truncated IDX header ({n} bytes, need {len})",
        path.display()
    );
    Ok(bytes)
}

/// Reads the `need` bytes after the header, refusing a body of another length. Memory grows with the data
/// actually present, never beyond `need` + 1 bytes, whatever the header claims.
fn read_body(r: &mut dyn Read, path: &Path, need: usize, what: &str) -> Result<Vec<u8>> {
    ensure!(
        need as u64 <= limits::MAX_IDX_BYTES,
        "{}: its header claims {what} of {need} bytes, more than the limit of {} bytes",
        path.display(),
        limits::MAX_IDX_BYTES
    );
    let mut body = Vec::new();
    r.take(need as u64 + 1)
        .read_to_end(&mut body)
        .with_context(|| format!("{}: corrupt or truncated gzip data", path.display()))?;
    let have = body.len();
    if have != need {
        bail!(
            "{}: file size does not match its header: {what} need {need} bytes, found {}{}",
            path.display(),
            if have > need {
                "more".to_string()
            } else {
                have.to_string()
            },
            if have < need {
                " (truncated download?)"
            } else {
                ""
            }
        );
    }
    Ok(body)
}

/// Reads an IDX3 image file (`*-images-idx3-ubyte`, optionally `.gz`).
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<IdxImages> {
    let path = path.as_ref();
    let mut r = open_maybe_gz(path)?;
    let header = read_header(&mut r, path, IMAGES_MAGIC, 16)?;
    let (count, rows, cols) = (
        be_u32(&header, 4) as usize,
        be_u32(&header, 8) as usize,
        be_u32(&header, 12) as usize,
    );
    ensure!(
        rows > 0 && cols > 0 && rows <= 4096 && cols <= 4096,
        "{}: implausible image size {rows}x{cols}",
        path.display()
    );
    let need = count
        .checked_mul(rows * cols)
        .with_context(|| format!("{}: image count {count} overflows", path.display()))?;
    let pixels = read_body(
        &mut r,
        path,
        need,
        &format!("{count} images of {rows}x{cols} pixels"),
    )?;
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Reads an IDX1 label file (`*-labels-idx1-ubyte`, optionally `.gz`).
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>> {
    let path = path.as_ref();
    let mut r = open_maybe_gz(path)?;
    let header = read_header(&mut r, path, LABELS_MAGIC, 8)?;
    let count = be_u32(&header, 4) as usize;
    read_body(&mut r, path, count, &format!("{count} labels"))
}

/// The first of `names` (tried with and without `.gz`) that exists in `dir`.
fn find_file(dir: &Path, names: &[String]) -> Option<PathBuf> {
    names
        .iter()
        .flat_map(|n| [dir.join(n), dir.join(format!("{n}.gz"))])
        .find(|p| p.is_file())
}

/// MNIST-format images held in memory (all of MNIST is 47 MB of bytes), converted to floats on demand.
pub struct IdxDataset {
    name: String,
    source: PathBuf,
    images: IdxImages,
    labels: Option<Vec<u8>>,
    num_classes: Option<usize>,
    size: usize,
    channels: usize,
}

impl IdxDataset {
    /// Opens split `split` of the dataset in `dir`: `train-images-idx3-ubyte[.gz]` and
    /// `train-labels-idx1-ubyte[.gz]` (or `t10k-*` for the test split; the `train-images.idx3-ubyte` spelling
    /// is accepted too). The label file is optional, since an unconditional GAN does not need it. `name`
    /// (`mnist`, `fashion`) is only used in messages.
    pub fn open(
        dir: &Path,
        name: &str,
        split: Split,
        size: usize,
        channels: usize,
    ) -> Result<IdxDataset> {
        ensure!(
            dir.is_dir(),
            "{name} directory {} does not exist (scripts/fetch_mnist.sh downloads MNIST to data/mnist and \
             Fashion-MNIST to data/fashion)",
            dir.display()
        );
        let p = split.prefix();
        let image_names = [
            format!("{p}-images-idx3-ubyte"),
            format!("{p}-images.idx3-ubyte"),
        ];
        let label_names = [
            format!("{p}-labels-idx1-ubyte"),
            format!("{p}-labels.idx1-ubyte"),
        ];
        let images = find_file(dir, &image_names).with_context(|| {
            format!(
                "no {name} image file in {}: expected {}[.gz]",
                dir.display(),
                image_names[0]
            )
        })?;
        let labels = find_file(dir, &label_names);
        let mut ds = IdxDataset::from_files(&images, labels.as_deref(), name, size, channels)?;
        // Both datasets have the ten classes 0..9; a larger label means a corrupt or foreign label file, which
        // would silently widen a conditional model.
        if let (Some(lp), Some(l)) = (&labels, &ds.labels) {
            if let Some(i) = l.iter().position(|&y| y >= MNIST_CLASSES) {
                bail!(
                    "{}: label {} of image {i} is not a {name} class (0 to {})",
                    lp.display(),
                    l[i],
                    MNIST_CLASSES - 1
                );
            }
        }
        ds.name = format!(
            "{name} {}",
            if split == Split::Train {
                "train"
            } else {
                "test"
            }
        );
        ds.source = dir.to_path_buf();
        Ok(ds)
    }

    /// Opens an explicit image file and, optionally, its label file.
    pub fn from_files(
        images: &Path,
        labels: Option<&Path>,
        name: &str,
        size: usize,
        channels: usize,
    ) -> Result<IdxDataset> {
        ensure!(
            (8..=4096).contains(&size),
            "{name}: image size must be between 8 and 4096 pixels, got {size}"
        );
        ensure!(
            channels == 1 || channels == 3,
            "{name}: channels must be 1 (grey) or 3 (RGB), got {channels}"
        );
        let imgs = read_idx_images(images)?;
        ensure!(imgs.count > 0, "{}: contains no images", images.display());
        let labels = match labels {
            None => None,
            Some(lp) => {
                let l = read_idx_labels(lp)?;
                ensure!(
                    l.len() == imgs.count,
                    "{} has {} labels but {} has {} images: the files do not belong together",
                    lp.display(),
                    l.len(),
                    images.display(),
                    imgs.count
                );
                Some(l)
            }
        };
        let num_classes = labels
            .as_ref()
            .map(|l| *l.iter().max().unwrap_or(&0) as usize + 1);
        Ok(IdxDataset {
            name: name.to_string(),
            source: images.to_path_buf(),
            images: imgs,
            labels,
            num_classes,
            size,
            channels,
        })
    }

    /// `(rows, cols)` as stored in the file (28x28 for MNIST and Fashion-MNIST).
    pub fn native_size(&self) -> (usize, usize) {
        (self.images.rows, self.images.cols)
    }
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.images.count
    }

    fn image_shape(&self) -> (usize, usize, usize) {
        (self.channels, self.size, self.size)
    }

    fn num_classes(&self) -> Option<usize> {
        self.num_classes
    }

    fn get(&self, i: usize) -> Result<(Vec<f32>, Option<u32>)> {
        ensure!(
            i < self.len(),
            "{}: index {i} out of range for {} images",
            self.name,
            self.len()
        );
        let (rows, cols) = (self.images.rows, self.images.cols);
        let src = &self.images.pixels[i * rows * cols..(i + 1) * rows * cols];
        let plane: Vec<f32> = if rows == self.size && cols == self.size {
            src.iter().map(|&p| p as f32 / 127.5 - 1.0).collect()
        } else {
            // Bilinear in float, so no second rounding to bytes. A triangle kernel has no negative lobes,
            // so the result stays inside the input range; the clamp only guards float rounding.
            let img: ImageBuffer<Luma<f32>, Vec<f32>> = ImageBuffer::from_raw(
                cols as u32,
                rows as u32,
                src.iter().map(|&p| p as f32 / 255.0).collect(),
            )
            .context("IDX image buffer")?;
            let out = imageops::resize(
                &img,
                self.size as u32,
                self.size as u32,
                FilterType::Triangle,
            );
            out.into_raw()
                .into_iter()
                .map(|v| (v * 2.0 - 1.0).clamp(-1.0, 1.0))
                .collect()
        };
        let data = if self.channels == 3 {
            plane.repeat(3)
        } else {
            plane
        };
        Ok((data, self.labels.as_ref().map(|l| l[i] as u32)))
    }

    fn describe(&self) -> String {
        format!(
            "{} ({}, {} images, {}x{}x{})",
            self.name,
            self.source.display(),
            self.len(),
            self.channels,
            self.size,
            self.size
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn images_bytes(count: u32, rows: u32, cols: u32, pixel: impl Fn(usize) -> u8) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [IMAGES_MAGIC, count, rows, cols] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend((0..(count * rows * cols) as usize).map(pixel));
        b
    }

    fn labels_bytes(labels: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        b.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        b.extend_from_slice(labels);
        b
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn err_of<T>(r: Result<T>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    /// 5 images of 7x6: pixel value encodes (image, position) so misplaced bytes would show.
    fn pix(i: usize) -> u8 {
        (i * 7 % 256) as u8
    }

    #[test]
    fn reads_raw_and_gz_identically() {
        let dir = tempfile::tempdir().unwrap();
        let img = images_bytes(5, 7, 6, pix);
        let lab = labels_bytes(&[3, 1, 4, 1, 5]);
        std::fs::write(dir.path().join("raw-images"), &img).unwrap();
        std::fs::write(dir.path().join("gz-images.gz"), gz(&img)).unwrap();
        std::fs::write(dir.path().join("raw-labels"), &lab).unwrap();
        std::fs::write(dir.path().join("gz-labels.gz"), gz(&lab)).unwrap();
        for (i, l) in [
            ("raw-images", "raw-labels"),
            ("gz-images.gz", "gz-labels.gz"),
        ] {
            let imgs = read_idx_images(dir.path().join(i)).unwrap();
            assert_eq!((imgs.count, imgs.rows, imgs.cols), (5, 7, 6));
            assert_eq!(imgs.pixels, (0..5 * 42).map(pix).collect::<Vec<_>>());
            assert_eq!(
                read_idx_labels(dir.path().join(l)).unwrap(),
                vec![3, 1, 4, 1, 5]
            );
        }
    }

    #[test]
    fn dataset_scaling_labels_and_channels() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte.gz"),
            gz(&images_bytes(3, 9, 9, |i| if i % 2 == 0 { 0 } else { 255 })),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            labels_bytes(&[0, 9, 2]),
        )
        .unwrap();
        let ds = IdxDataset::open(dir.path(), "mnist", Split::Train, 9, 1).unwrap();
        assert_eq!(
            (ds.len(), ds.image_shape(), ds.num_classes()),
            (3, (1, 9, 9), Some(10))
        );
        let (x, l) = ds.get(1).unwrap();
        assert_eq!(l, Some(9));
        // Image 1 starts at flat index 81 (odd), so it begins with 255 -> 1.0 and alternates.
        assert_eq!(&x[..3], &[1.0, -1.0, 1.0]);
        assert!(x.iter().all(|v| *v == 1.0 || *v == -1.0));

        let rgb = IdxDataset::open(dir.path(), "mnist", Split::Train, 9, 3).unwrap();
        let (y, _) = rgb.get(1).unwrap();
        assert_eq!(y.len(), 3 * 81);
        assert_eq!(&y[..81], &x[..]);
        assert_eq!(&y[162..], &x[..]);

        // The test split is a different file set, absent here.
        let e = err_of(IdxDataset::open(dir.path(), "mnist", Split::Test, 9, 1));
        assert!(e.contains("t10k-images-idx3-ubyte"), "{e}");
    }

    #[test]
    fn resize_to_32_and_64_stays_in_range_and_keeps_flat_areas() {
        let dir = tempfile::tempdir().unwrap();
        // Left half black, right half white.
        let img = images_bytes(2, 28, 28, |i| if i % 28 < 14 { 0 } else { 255 });
        std::fs::write(dir.path().join("train-images-idx3-ubyte"), img).unwrap();
        for size in [32usize, 64] {
            let ds = IdxDataset::open(dir.path(), "fashion", Split::Train, size, 1).unwrap();
            assert_eq!(ds.num_classes(), None, "no label file -> unlabelled");
            let (x, l) = ds.get(1).unwrap();
            assert_eq!((x.len(), l), (size * size, None));
            assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)));
            let row = &x[(size / 2) * size..(size / 2 + 1) * size];
            assert!((row[0] + 1.0).abs() < 1e-5 && (row[size - 1] - 1.0).abs() < 1e-5);
            // Bilinear: a monotone ramp across the edge.
            assert!(row.windows(2).all(|w| w[1] >= w[0] - 1e-6));
        }
    }

    #[test]
    fn bad_magic_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-images");
        let mut b = images_bytes(1, 2, 2, pix);
        b[2] = 0x0c; // 0x00000c03: some other IDX type
        std::fs::write(&p, &b).unwrap();
        let e = err_of(read_idx_images(&p));
        assert!(
            e.contains("bad IDX magic 0x00000c03") && e.contains("x-images"),
            "{e}"
        );
        assert!(e.contains("not an MNIST image file"), "{e}");

        // Swapped files get a hint.
        let lp = dir.path().join("labels");
        std::fs::write(&lp, labels_bytes(&[1, 2])).unwrap();
        let e = err_of(read_idx_images(&lp));
        assert!(e.contains("0x00000801") && e.contains("swapped"), "{e}");
        let e = err_of(read_idx_labels(&p));
        assert!(e.contains("not an MNIST label file"), "{e}");

        // Not IDX at all, e.g. an HTML error page saved by a failed download.
        std::fs::write(&p, b"<html>404</html>").unwrap();
        assert!(err_of(read_idx_images(&p)).contains("bad IDX magic"));
        std::fs::write(&p, b"\x00\x00").unwrap();
        assert!(err_of(read_idx_images(&p)).contains("too short"));
    }

    #[test]
    fn truncated_and_oversized_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("imgs");
        let full = images_bytes(4, 5, 5, pix);
        std::fs::write(&p, &full[..full.len() - 1]).unwrap();
        let e = err_of(read_idx_images(&p));
        assert!(
            e.contains("truncated") && e.contains("100 bytes") && e.contains("imgs"),
            "{e}"
        );
        std::fs::write(&p, &full[..10]).unwrap();
        assert!(err_of(read_idx_images(&p)).contains("header"));
        let mut longer = full.clone();
        longer.push(0);
        std::fs::write(&p, &longer).unwrap();
        assert!(err_of(read_idx_images(&p)).contains("does not match"));

        // A truncated gzip stream.
        let z = gz(&full);
        std::fs::write(&p, &z[..z.len() / 2]).unwrap();
        let e = err_of(read_idx_images(&p));
        assert!(e.contains("gzip") && e.contains("imgs"), "{e}");

        let lp = dir.path().join("labs");
        let l = labels_bytes(&[1, 2, 3]);
        std::fs::write(&lp, &l[..l.len() - 1]).unwrap();
        assert!(err_of(read_idx_labels(&lp)).contains("truncated"));

        // Absurd header dimensions.
        std::fs::write(&p, images_bytes(1, 0, 5, pix)).unwrap();
        assert!(err_of(read_idx_images(&p)).contains("implausible"));
    }

    #[test]
    fn label_image_count_mismatch_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t10k-images-idx3-ubyte"),
            images_bytes(4, 3, 3, pix),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("t10k-labels-idx1-ubyte.gz"),
            gz(&labels_bytes(&[1, 2, 3])),
        )
        .unwrap();
        let e = err_of(IdxDataset::open(dir.path(), "mnist", Split::Test, 8, 1));
        assert!(
            e.contains("3 labels") && e.contains("4 images") && e.contains("t10k-labels"),
            "{e}"
        );
    }

    #[test]
    fn labels_above_nine_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte"),
            images_bytes(3, 3, 3, pix),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            labels_bytes(&[1, 200, 3]),
        )
        .unwrap();
        let e = err_of(IdxDataset::open(dir.path(), "mnist", Split::Train, 8, 1));
        assert!(
            e.contains("label 200 of image 1") && e.contains("train-labels"),
            "{e}"
        );
    }

    #[test]
    fn missing_directory_is_an_error() {
        let e = err_of(IdxDataset::open(
            Path::new("/no/such/mnist"),
            "mnist",
            Split::Train,
            28,
            1,
        ));
        assert!(
            e.contains("/no/such/mnist") && e.contains("fetch_mnist"),
            "{e}"
        );
    }

    /// Reads the real MNIST / Fashion-MNIST if `scripts/fetch_mnist.sh` has been run; otherwise says loudly that
    /// it was skipped (written straight to stderr, which the test harness does not capture).
    #[test]
    fn real_mnist_files_if_present() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (name, sub) in [("mnist", "data/mnist"), ("fashion", "data/fashion")] {
            let dir = root.join(sub);
            if !dir.is_dir() {
                // CI fetches the data first (scripts/test.sh); there a missing folder is a failure, not a skip.
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{} not found in CI: scripts/test.sh should have run scripts/fetch_mnist.sh",
                    dir.display()
                );
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED real_mnist_files_if_present[{name}]: {} not found (run scripts/fetch_mnist.sh)",
                    dir.display()
                );
                continue;
            }
            for (split, n) in [(Split::Train, 60_000), (Split::Test, 10_000)] {
                let ds = IdxDataset::open(&dir, name, split, 28, 1).unwrap();
                assert_eq!(ds.len(), n);
                assert_eq!(ds.native_size(), (28, 28));
                assert_eq!(ds.num_classes(), Some(10));
                let (x, l) = ds.get(n - 1).unwrap();
                assert!(l.unwrap() < 10);
                assert!(x.iter().any(|&v| v > 0.5) && x.iter().any(|&v| v == -1.0));
            }
            let _ = writeln!(
                std::io::stderr(),
                "real {name} files read from {}",
                dir.display()
            );
        }
    }
}
