//! The IDX loader: the built-in MNIST, `--data-dir` (gzipped and raw), Fashion-MNIST
//! from Debian, and clear errors for missing, truncated and corrupt files.

use std::io::Write;
use std::path::{Path, PathBuf};

use cvae::data::{parse_idx, preprocess, Dataset, FILES};

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A fresh folder under the target dir with four small valid raw files.
fn tiny_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(dir.join(FILES[0]), idx(&[3, 4, 5], &pixels)).unwrap();
    std::fs::write(dir.join(FILES[1]), idx(&[3], &[1, 2, 3])).unwrap();
    std::fs::write(dir.join(FILES[2]), idx(&[2, 4, 5], &pixels[..40])).unwrap();
    std::fs::write(dir.join(FILES[3]), idx(&[2], &[9, 0])).unwrap();
    dir
}

fn err(dir: &Path) -> String {
    format!("{:#}", anyhow::Error::from(Dataset::from_dir(dir).unwrap_err()))
}

#[test]
fn built_in_mnist_loads() {
    let d = Dataset::embedded().unwrap();
    assert_eq!((d.train.len(), d.test.len(), d.train.rows, d.train.cols), (60_000, 10_000, 28, 28));
    // The first training label of MNIST is a 5, the first test label a 7.
    assert_eq!((d.train.labels[0], d.test.labels[0]), (5, 7));
    let x = d.train.to_f32(true);
    assert!(x.iter().all(|&v| v == 0.0 || v == 1.0));
    let ink = x.iter().sum::<f32>() / x.len() as f32;
    assert!((0.08..0.2).contains(&ink), "fraction of stroke pixels {ink}");
}

#[test]
fn preprocessing_scales_and_binarizes_at_one_half() {
    assert_eq!(preprocess(0, false), 0.0);
    assert_eq!(preprocess(255, false), 1.0);
    assert_eq!(preprocess(127, true), 0.0); // 0.498
    assert_eq!(preprocess(128, true), 1.0); // 0.502
}

#[test]
fn raw_and_gzipped_files_load_from_a_folder() {
    let dir = tiny_dir("data_raw");
    let d = Dataset::from_dir(&dir).unwrap();
    assert_eq!((d.train.len(), d.test.len(), d.train.rows, d.train.cols), (3, 2, 4, 5));
    // Replace one file by its gzipped twin: same result.
    let raw = std::fs::read(dir.join(FILES[0])).unwrap();
    std::fs::remove_file(dir.join(FILES[0])).unwrap();
    std::fs::write(dir.join(format!("{}.gz", FILES[0])), gz(&raw)).unwrap();
    let g = Dataset::from_dir(&dir).unwrap();
    assert_eq!(g.train.images, d.train.images);
}

/// Fashion-MNIST from Debian's dataset-fashion-mnist must load unchanged through --data-dir.
#[test]
fn fashion_mnist_from_debian_loads() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    assert!(dir.is_dir(), "{} is missing: install it with `apt-get install -y dataset-fashion-mnist` (.ci/run does)", dir.display());
    let d = Dataset::from_dir(dir).unwrap();
    assert_eq!((d.train.len(), d.test.len(), d.train.rows, d.train.cols), (60_000, 10_000, 28, 28));
    // Fashion-MNIST is balanced: 6,000 training images per class.
    for c in 0..10u8 {
        assert_eq!(d.train.labels.iter().filter(|&&l| l == c).count(), 6000);
    }
}

#[test]
fn missing_file_is_named() {
    let dir = tiny_dir("data_missing");
    std::fs::remove_file(dir.join(FILES[3])).unwrap();
    let e = err(&dir);
    assert!(e.contains("t10k-labels-idx1-ubyte") && e.contains("not found"), "{e}");
}

#[test]
fn truncated_file_is_named_with_sizes() {
    let dir = tiny_dir("data_truncated");
    let bytes = std::fs::read(dir.join(FILES[0])).unwrap();
    std::fs::write(dir.join(FILES[0]), &bytes[..bytes.len() - 7]).unwrap();
    let e = err(&dir);
    assert!(e.contains("train-images-idx3-ubyte") && e.contains("truncated") && e.contains("need 60 bytes"), "{e}");
    // A header cut short, and an empty file.
    std::fs::write(dir.join(FILES[0]), &bytes[..9]).unwrap();
    assert!(err(&dir).contains("truncated header"), "{}", err(&dir));
    std::fs::write(dir.join(FILES[0]), b"").unwrap();
    assert!(err(&dir).contains("truncated"), "{}", err(&dir));
}

#[test]
fn wrong_kind_of_file_is_explained() {
    let dir = tiny_dir("data_swapped");
    // A labels file where the images should be.
    std::fs::copy(dir.join(FILES[1]), dir.join(FILES[0])).unwrap();
    let e = err(&dir);
    assert!(e.contains("train-images-idx3-ubyte") && e.contains("has 1 dimensions, expected an images file"), "{e}");
    // Not IDX at all.
    std::fs::write(dir.join(FILES[0]), b"hello, world, this is text").unwrap();
    assert!(err(&dir).contains("not an IDX file"), "{}", err(&dir));
    // IDX of floats.
    let mut f = idx(&[1, 1, 1], &[0, 0, 0, 0]);
    f[2] = 0x0d;
    std::fs::write(dir.join(FILES[0]), f).unwrap();
    assert!(err(&dir).contains("element type 0x0d"), "{}", err(&dir));
}

#[test]
fn disagreeing_counts_and_sizes_are_errors() {
    let dir = tiny_dir("data_counts");
    std::fs::write(dir.join(FILES[1]), idx(&[4], &[1, 2, 3, 4])).unwrap();
    let e = err(&dir);
    assert!(e.contains("3 images") && e.contains("4 labels"), "{e}");
    let dir = tiny_dir("data_sizes");
    std::fs::write(dir.join(FILES[2]), idx(&[2, 5, 4], &[0; 40])).unwrap();
    let e = err(&dir);
    assert!(e.contains("4x5") && e.contains("5x4"), "{e}");
    let dir = tiny_dir("data_labels");
    std::fs::write(dir.join(FILES[3]), idx(&[2], &[3, 200])).unwrap();
    assert!(err(&dir).contains("label 200"), "{}", err(&dir));
}

#[test]
fn corrupt_gzip_is_an_error_not_a_panic() {
    let dir = tiny_dir("data_gzip");
    let raw = std::fs::read(dir.join(FILES[2])).unwrap();
    let mut z = gz(&raw);
    let n = z.len();
    z.truncate(n / 2);
    std::fs::remove_file(dir.join(FILES[2])).unwrap();
    std::fs::write(dir.join(format!("{}.gz", FILES[2])), z).unwrap();
    let e = err(&dir);
    assert!(e.contains("t10k-images-idx3-ubyte.gz") && e.contains("gzip"), "{e}");
}

#[test]
fn parse_idx_never_panics_on_prefixes() {
    let good = idx(&[2, 3, 3], &[7; 18]);
    for n in 0..good.len() {
        assert!(parse_idx(&good[..n], "x", 3).is_err());
    }
    assert!(parse_idx(&good, "x", 3).is_ok());
    // Dimensions whose product overflows.
    assert!(parse_idx(&idx(&[u32::MAX, u32::MAX, u32::MAX], &[]), "x", 3).is_err());
}
