//! MNIST-format data: the IDX parser, the copy of MNIST built into the binary,
//! and `--data-dir` for any folder holding the four standard files.
//!
//! Our own small parser rather than the `mnist` crate: that crate reads only
//! uncompressed files from a path and panics on a bad file, while we need gzip,
//! bytes embedded in the binary, and errors that name the file and the problem.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The four files, as every MNIST-format data set names them.
pub const FILES: [&str; 4] = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

static EMBEDDED: [&[u8]; 4] = [
    include_bytes!("../assets/mnist/train-images-idx3-ubyte.gz"),
    include_bytes!("../assets/mnist/train-labels-idx1-ubyte.gz"),
    include_bytes!("../assets/mnist/t10k-images-idx3-ubyte.gz"),
    include_bytes!("../assets/mnist/t10k-labels-idx1-ubyte.gz"),
];

/// A gzip stream larger than this after inflating is not an MNIST-sized file.
const MAX_INFLATED: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{file}: cannot read it: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not found (looked for {file} and {file}.gz); a data folder needs the four files {}", FILES.join(", "))]
    Missing { file: String },
    #[error("{file}: not valid gzip data: {source}")]
    Gzip {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {problem}")]
    Format { file: String, problem: String },
    #[error("{images} has {n_images} images but {labels} has {n_labels} labels; they must agree")]
    CountMismatch { images: String, n_images: usize, labels: String, n_labels: usize },
    #[error("{train} holds {train_rows}x{train_cols} images but {test} holds {test_rows}x{test_cols}; they must agree")]
    SizeMismatch { train: String, train_rows: usize, train_cols: usize, test: String, test_rows: usize, test_cols: usize },
}

fn format_err(file: &str, problem: impl Into<String>) -> DataError {
    DataError::Format { file: file.to_string(), problem: problem.into() }
}

/// One parsed IDX file: unsigned bytes with their dimensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Inflate if the bytes are gzip (magic 1f 8b), else return them as they are.
pub fn maybe_gunzip(bytes: &[u8], file: &str) -> Result<Vec<u8>, DataError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(MAX_INFLATED)
            .read_to_end(&mut out)
            .map_err(|source| DataError::Gzip { file: file.to_string(), source })?;
        Ok(out)
    } else {
        Ok(bytes.to_vec())
    }
}

/// Parse an IDX file of unsigned bytes with `ndim` dimensions.
/// The header is: two zero bytes, type code 0x08 (u8), the number of dimensions,
/// then each dimension as a big-endian u32.
pub fn parse_idx(bytes: &[u8], file: &str, ndim: usize) -> Result<Idx, DataError> {
    let (dims, header) = check_idx(bytes, file, ndim)?;
    Ok(Idx { dims, data: bytes[header..].to_vec() })
}

/// As `parse_idx`, taking the bytes: the header is removed in place, so a 47 MB
/// file is not held twice.
pub fn into_idx(mut bytes: Vec<u8>, file: &str, ndim: usize) -> Result<Idx, DataError> {
    let (dims, header) = check_idx(&bytes, file, ndim)?;
    bytes.drain(..header);
    Ok(Idx { dims, data: bytes })
}

/// Validate an IDX file; returns its dimensions and the header length.
fn check_idx(bytes: &[u8], file: &str, ndim: usize) -> Result<(Vec<usize>, usize), DataError> {
    if bytes.len() < 4 {
        return Err(format_err(file, format!("truncated: {} bytes, shorter than the 4-byte IDX magic number", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format_err(file, format!("not an IDX file: magic number starts {:02x} {:02x}, expected 00 00", bytes[0], bytes[1])));
    }
    if bytes[2] != 0x08 {
        return Err(format_err(file, format!("IDX element type 0x{:02x}, expected 0x08 (unsigned bytes)", bytes[2])));
    }
    let got = bytes[3] as usize;
    if got != ndim {
        let what = if ndim == 3 { "an images file (3 dimensions: count, rows, columns)" } else { "a labels file (1 dimension: count)" };
        return Err(format_err(file, format!("has {got} dimensions, expected {what}")));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(format_err(file, format!("truncated header: {} bytes, expected at least {header}", bytes.len())));
    }
    let dims: Vec<usize> =
        (0..ndim).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize).collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format_err(file, format!("dimensions {dims:?} overflow")))?;
    let body = bytes.len() - header;
    if body != expected {
        let how = if body < expected { "truncated" } else { "too long" };
        return Err(format_err(file, format!("{how}: dimensions {dims:?} need {expected} bytes of data, found {body}")));
    }
    Ok((dims, header))
}

/// Images and labels of one split, images as raw bytes (0..=255) row-major.
#[derive(Clone, Debug)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * self.pixels()..(i + 1) * self.pixels()]
    }
    /// The first `n` examples (or all, when `n` is larger).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.images.truncate(n * self.pixels());
        self.labels.truncate(n);
    }
    /// Images as floats, the way the reference program prepares them:
    /// scaled to [0, 1], then (unless `binarize` is false) 1 where > 0.5, else 0.
    pub fn to_f32(&self, binarize: bool) -> Vec<f32> {
        self.images.iter().map(|&b| preprocess(b, binarize)).collect()
    }
}

/// One pixel: scale to [0, 1]; binarize at 0.5. The shader `gather_images` does the same.
pub fn preprocess(byte: u8, binarize: bool) -> f32 {
    let x = byte as f32 / 255.0;
    if binarize {
        if x > 0.5 {
            1.0
        } else {
            0.0
        }
    } else {
        x
    }
}

#[derive(Clone, Debug)]
pub struct Dataset {
    /// Where it came from, for messages and the run config.
    pub source: String,
    pub train: Split,
    pub test: Split,
}

impl Dataset {
    /// The MNIST copy built into the binary.
    pub fn embedded() -> Result<Dataset, DataError> {
        let mut parts = Vec::new();
        for (name, bytes) in FILES.iter().zip(EMBEDDED.iter()) {
            let file = format!("<built-in>/{name}.gz");
            parts.push((file.clone(), maybe_gunzip(bytes, &file)?));
        }
        Dataset::from_parts("built-in MNIST".into(), parts)
    }

    /// The four standard files from a folder, each gzipped (`NAME.gz`) or raw (`NAME`).
    pub fn from_dir(dir: &Path) -> Result<Dataset, DataError> {
        let mut parts = Vec::new();
        for name in FILES {
            let path = find_file(dir, name)?;
            let file = path.display().to_string();
            let bytes = std::fs::read(&path).map_err(|source| DataError::Io { file: file.clone(), source })?;
            parts.push((file.clone(), maybe_gunzip(&bytes, &file)?));
        }
        Dataset::from_parts(dir.display().to_string(), parts)
    }

    /// `--data-dir` if given, else the built-in copy.
    pub fn load(dir: Option<&Path>) -> Result<Dataset, DataError> {
        match dir {
            Some(d) => Dataset::from_dir(d),
            None => Dataset::embedded(),
        }
    }

    fn from_parts(source: String, parts: Vec<(String, Vec<u8>)>) -> Result<Dataset, DataError> {
        let split = |img: (String, Vec<u8>), lab: (String, Vec<u8>)| -> Result<Split, DataError> {
            let images = into_idx(img.1, &img.0, 3)?;
            let labels = into_idx(lab.1, &lab.0, 1)?;
            let (n_images, rows, cols) = (images.dims[0], images.dims[1], images.dims[2]);
            if rows == 0 || cols == 0 {
                return Err(format_err(&img.0, format!("images of {rows}x{cols} pixels; expected a non-empty size")));
            }
            if n_images != labels.dims[0] {
                return Err(DataError::CountMismatch { images: img.0.clone(), n_images, labels: lab.0.clone(), n_labels: labels.dims[0] });
            }
            if let Some(bad) = labels.data.iter().position(|&l| l > 9) {
                return Err(format_err(&lab.0, format!("label {} at index {bad} is not a digit class 0-9", labels.data[bad])));
            }
            Ok(Split { images: images.data, labels: labels.data, rows, cols })
        };
        let (train_file, test_file) = (parts[0].0.clone(), parts[2].0.clone());
        let mut parts = parts.into_iter();
        let mut next = || parts.next().expect("four files");
        let train = split(next(), next())?;
        let test = split(next(), next())?;
        if (train.rows, train.cols) != (test.rows, test.cols) {
            return Err(DataError::SizeMismatch {
                train: train_file,
                train_rows: train.rows,
                train_cols: train.cols,
                test: test_file,
                test_rows: test.rows,
                test_cols: test.cols,
            });
        }
        Ok(Dataset { source, train, test })
    }
}

fn find_file(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    for candidate in [dir.join(format!("{name}.gz")), dir.join(name)] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(DataError::Missing { file: dir.join(name).display().to_string() })
}
