//! MNIST-format (idx) files written by the tests, for runs that need no downloaded data.

use std::path::Path;

/// MNIST-format files: `n` 28×28 images whose pixels depend on their label, labels `i % classes`.
pub fn write_idx(dir: &Path, n: usize, classes: u8, with_labels: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let mut img = vec![0, 0, 8, 3];
    for d in [n as u32, 28, 28] {
        img.extend_from_slice(&d.to_be_bytes());
    }
    let mut lab = vec![0, 0, 8, 1];
    lab.extend_from_slice(&(n as u32).to_be_bytes());
    for i in 0..n {
        let y = (i % classes as usize) as u8;
        // A bright bar whose row depends on the class, so the classes look different.
        for r in 0..28u8 {
            for c in 0..28u8 {
                let on = r / 4 == y % 7 && c > 3 && c < 24;
                img.push(if on {
                    250
                } else {
                    (i as u8).wrapping_mul(7) % 40
                });
            }
        }
        lab.push(y);
    }
    std::fs::write(dir.join("train-images-idx3-ubyte"), img).unwrap();
    if with_labels {
        std::fs::write(dir.join("train-labels-idx1-ubyte"), lab).unwrap();
    }
}
