//! Looking into a trained model: samples, reconstructions, the latent manifold, a
//! latent scatter plot, interpolations and evaluation. Every command reads a
//! checkpoint (or a run folder's latest), runs the encoder or decoder on the GPU
//! through the training kernels, and writes a PNG (or prints numbers).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::checkpoint::{self, Checkpoint};
use crate::data::{Dataset, Split};
use crate::gpu::kernels::Kernels;
use crate::gpu::runner::{ImageTerms, Runner};
use crate::gpu::{AdapterChoice, Gpu};
use crate::images;
use crate::model::{Model, Shape};
use crate::pretrained::Pretrained;
use crate::rng::{Rng, Stream};
use crate::stats::{linspace, normal_quantile, pca2};

/// A loaded checkpoint with a device to run it on.
pub struct Session {
    pub ck: Checkpoint,
    pub model: Model,
    /// The run folder (where pictures go by default).
    pub dir: PathBuf,
    pub gpu: Gpu,
    pub kernels: Kernels,
}

/// Where a look-inside command's model comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A run folder (its latest checkpoint) or a checkpoint or weights file.
    Path(PathBuf),
    /// Weights built into the binary.
    Pretrained(Pretrained),
}

impl Session {
    /// Load the model of `source` and open a device. Pictures go into the run folder,
    /// or the current folder for built-in weights.
    pub fn open(source: &Source, adapter: AdapterChoice) -> Result<Session> {
        let (ck, dir) = match source {
            Source::Path(path) => {
                let ck = checkpoint::load(path)?;
                let dir = if path.is_dir() {
                    path.to_path_buf()
                } else {
                    path.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
                };
                (ck, dir)
            }
            Source::Pretrained(p) => (p.load()?, PathBuf::from(".")),
        };
        let model = ck.config.model()?;
        let gpu = Gpu::open(adapter)?;
        let kernels = Kernels::new(&gpu)?;
        Ok(Session { ck, model, dir, gpu, kernels })
    }

    /// The checkpoint's parameters on the GPU, for inference on up to `cap` images at once.
    pub fn runner(&self, cap: usize) -> Result<Runner<'_>> {
        Runner::new(&self.gpu, &self.kernels, &self.model, &self.ck.params, cap, self.ck.config.kernels.clone())
    }

    /// The test split of the run's data set (or `data_dir`), its first `limit` images.
    pub fn test_split(&self, data_dir: Option<&Path>, limit: Option<usize>) -> Result<Split> {
        let dir = data_dir.map(Path::to_path_buf).or_else(|| self.ck.config.data_dir.clone());
        let mut test = Dataset::load(dir.as_deref())?.test;
        if let Some(n) = limit {
            if n == 0 || n > test.len() {
                bail!("--test-size must be between 1 and {}, got {n}", test.len());
            }
            test.truncate(n);
        }
        Ok(test)
    }

    fn out_path(&self, out: Option<PathBuf>, default: &str) -> PathBuf {
        out.unwrap_or_else(|| self.dir.join(default))
    }
}

fn hw(model: &Model) -> (usize, usize) {
    match model.image {
        Shape::Image { h, w, .. } => (h, w),
        Shape::Flat(n) => (1, n),
    }
}

fn save_grid(model: &Model, probs: &[f32], count: usize, cols: usize, scale: usize, gap: usize, out: &Path) -> Result<()> {
    let (h, w) = hw(model);
    let img = images::grid(probs, count, h, w, cols, scale, gap);
    images::save_png(out, &image::DynamicImage::ImageLuma8(img))?;
    Ok(())
}

/// `cvae sample`: `n` decodings of fresh latent vectors, as a square grid.
pub fn sample(s: &Session, n: usize, seed: u64, temperature: f32, out: Option<PathBuf>) -> Result<PathBuf> {
    if n == 0 {
        bail!("--n must be at least 1");
    }
    let l = s.model.latent;
    // Step 1 of the Samples stream: step 0 holds the training run's fixed grid vectors.
    let z: Vec<f32> = Rng::new(seed).normals(Stream::Samples, 1, n * l).into_iter().map(|v| v * temperature).collect();
    let mut t = s.runner(n.min(256))?;
    let probs = t.decode(&z)?;
    let path = s.out_path(out, "samples.png");
    let cols = (n as f64).sqrt().ceil() as usize;
    save_grid(&s.model, &probs, n, cols, 2, 2, &path)?;
    Ok(path)
}

/// `cvae reconstruct`: rows of test images over rows of their reconstructions.
pub fn reconstruct(
    s: &Session,
    n: usize,
    start: usize,
    use_sample: bool,
    seed: u64,
    data_dir: Option<&Path>,
    out: Option<PathBuf>,
) -> Result<PathBuf> {
    let test = s.test_split(data_dir, None)?;
    if n == 0 || start + n > test.len() {
        bail!("--start {start} and --n {n} must pick images within the {} test images", test.len());
    }
    let pixels = s.model.image.len();
    let x: Vec<f32> = test.to_f32(s.ck.config.binarize)[start * pixels..(start + n) * pixels].to_vec();
    let mut t = s.runner(n.min(256))?;
    let enc = t.encode(&x)?;
    let l = s.model.latent;
    let eps = Rng::new(seed).normals(Stream::Samples, 2, n * l);
    let z: Vec<f32> = (0..n * l)
        .map(|i| {
            let (m, lv) = crate::cpu::reparam::mean_logvar(&enc, l, i / l, i % l);
            if use_sample {
                m + (0.5 * lv).exp() * eps[i]
            } else {
                m
            }
        })
        .collect();
    let rec = t.decode(&z)?;
    let cols = n.min(10);
    let rows = n.div_ceil(cols);
    let mut all = vec![0.0f32; 2 * rows * cols * pixels];
    all[..n * pixels].copy_from_slice(&x);
    all[rows * cols * pixels..rows * cols * pixels + n * pixels].copy_from_slice(&rec);
    let path = s.out_path(out, "reconstructions.png");
    save_grid(&s.model, &all, 2 * rows * cols, cols, 2, 2, &path)?;
    Ok(path)
}

/// Which two directions of the latent space the manifold spans.
#[derive(Clone, Debug, PartialEq)]
pub enum Axes {
    Dims(usize, usize),
    Pca,
}

impl std::str::FromStr for Axes {
    type Err = String;
    fn from_str(v: &str) -> Result<Self, String> {
        if v == "pca" {
            return Ok(Axes::Pca);
        }
        let parts: Vec<&str> = v.split(',').collect();
        match parts.as_slice() {
            [a, b] => match (a.trim().parse(), b.trim().parse()) {
                (Ok(a), Ok(b)) if a != b => Ok(Axes::Dims(a, b)),
                _ => Err(format!("--axes takes two different dimensions like 0,1 or the word pca, got {v}")),
            },
            _ => Err(format!("--axes takes two dimensions like 0,1 or the word pca, got {v}")),
        }
    }
}

/// The latent vectors of an n x n manifold: row i, column j at the standard-normal
/// quantiles of linspace(0.05, 0.95, n), as the Keras program draws it
/// (z[axis 0] follows the column, z[axis 1] the row).
pub fn manifold_points(latent: usize, n: usize, axes: &Axes, centre: &[f64], dirs: Option<&[(Vec<f64>, f64); 2]>) -> Vec<f32> {
    let q: Vec<f64> = linspace(0.05, 0.95, n).into_iter().map(normal_quantile).collect();
    let mut z = Vec::with_capacity(n * n * latent);
    for &qi in &q {
        for &qj in &q {
            let mut v = centre.to_vec();
            match (axes, dirs) {
                (Axes::Dims(a, b), _) => {
                    v[*a] += qj;
                    v[*b] += qi;
                }
                (Axes::Pca, Some([(v1, s1), (v2, s2)])) => {
                    for k in 0..latent {
                        v[k] += qj * s1 * v1[k] + qi * s2 * v2[k];
                    }
                }
                (Axes::Pca, None) => {}
            }
            z.extend(v.iter().map(|&x| x as f32));
        }
    }
    z
}

/// `cvae manifold`: an n x n grid of decodings over two latent axes, digits touching.
pub fn manifold(s: &Session, n: usize, axes: &Axes, data_dir: Option<&Path>, out: Option<PathBuf>) -> Result<PathBuf> {
    let l = s.model.latent;
    if n < 2 {
        bail!("--n must be at least 2");
    }
    if let Axes::Dims(a, b) = axes {
        if *a >= l || *b >= l {
            bail!("--axes {a},{b}: the latent space has {l} dimensions (0 to {})", l - 1);
        }
    }
    let mut t = s.runner(256.min(n * n))?;
    let (centre, dirs) = match axes {
        Axes::Dims(..) => (vec![0.0; l], None),
        Axes::Pca => {
            let means = test_means(s, &mut t, data_dir, None)?.0;
            let (mean, dirs) = pca2(&means, l);
            (mean, Some(dirs))
        }
    };
    let z = manifold_points(l, n, axes, &centre, dirs.as_ref());
    let probs = t.decode(&z)?;
    let path = s.out_path(out, "manifold.png");
    save_grid(&s.model, &probs, n * n, n, 2, 0, &path)?;
    Ok(path)
}

/// The latent means [n, latent] of the test images and their labels.
fn test_means(s: &Session, t: &mut Runner<'_>, data_dir: Option<&Path>, limit: Option<usize>) -> Result<(Vec<f32>, Vec<u8>)> {
    let test = s.test_split(data_dir, limit)?;
    let enc = t.encode(&test.to_f32(s.ck.config.binarize))?;
    let (means, _) = crate::cpu::reparam::split(&enc, s.model.latent);
    Ok((means, test.labels))
}

/// `cvae scatter`: the test set's latent means in 2-D, colored by label.
pub fn scatter(s: &Session, data_dir: Option<&Path>, limit: Option<usize>, out: Option<PathBuf>) -> Result<PathBuf> {
    let l = s.model.latent;
    let mut t = s.runner(256)?;
    let (means, labels) = test_means(s, &mut t, data_dir, limit)?;
    let (points, xl, yl): (Vec<(f64, f64, u8)>, &str, &str) = if l == 2 {
        (means.chunks(2).zip(&labels).map(|(m, &c)| (m[0] as f64, m[1] as f64, c)).collect(), "z[0]", "z[1]")
    } else {
        let (mean, [(v1, _), (v2, _)]) = pca2(&means, l);
        let proj = |m: &[f32], v: &[f64]| m.iter().zip(&mean).zip(v).map(|((&x, mu), w)| (x as f64 - mu) * w).sum::<f64>();
        (
            means.chunks(l).zip(&labels).map(|(m, &c)| (proj(m, &v1), proj(m, &v2), c)).collect(),
            "first principal direction",
            "second principal direction",
        )
    };
    let path = s.out_path(out, "scatter.png");
    images::scatter_plot(&path, &format!("Latent means of {} test images", labels.len()), xl, yl, &points)?;
    Ok(path)
}

/// `cvae interpolate`: decodings along the line (or great circle) between two test images' encodings.
#[allow(clippy::too_many_arguments)]
pub fn interpolate(
    s: &Session,
    from: usize,
    to: usize,
    steps: usize,
    slerp: bool,
    data_dir: Option<&Path>,
    out: Option<PathBuf>,
) -> Result<PathBuf> {
    let test = s.test_split(data_dir, None)?;
    if from >= test.len() || to >= test.len() {
        bail!("--from {from} and --to {to} must be test image indices below {}", test.len());
    }
    if steps < 2 {
        bail!("--steps must be at least 2");
    }
    let pixels = s.model.image.len();
    let all = test.to_f32(s.ck.config.binarize);
    let mut x = all[from * pixels..(from + 1) * pixels].to_vec();
    x.extend_from_slice(&all[to * pixels..(to + 1) * pixels]);
    let mut t = s.runner(steps.max(2))?;
    let enc = t.encode(&x)?;
    let l = s.model.latent;
    let (a, b) = (&enc[..l], &enc[2 * l..3 * l]);
    let z: Vec<f32> = linspace(0.0, 1.0, steps).into_iter().flat_map(|u| interp(a, b, u as f32, slerp)).collect();
    let dec = t.decode(&z)?;
    // The two originals at the ends of the row.
    let mut row = x[..pixels].to_vec();
    row.extend_from_slice(&dec);
    row.extend_from_slice(&x[pixels..]);
    let path = s.out_path(out, "interpolation.png");
    save_grid(&s.model, &row, steps + 2, steps + 2, 2, 2, &path)?;
    Ok(path)
}

/// Linear or spherical interpolation between two latent vectors.
pub fn interp(a: &[f32], b: &[f32], u: f32, slerp: bool) -> Vec<f32> {
    if slerp {
        let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos = (a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (na * nb).max(1e-12)).clamp(-1.0, 1.0);
        let omega = cos.acos();
        if omega.abs() > 1e-4 {
            let (wa, wb) = (((1.0 - u) * omega).sin() / omega.sin(), (u * omega).sin() / omega.sin());
            return a.iter().zip(b).map(|(x, y)| wa * x + wb * y).collect();
        }
    }
    a.iter().zip(b).map(|(x, y)| (1.0 - u) * x + u * y).collect()
}

/// What `cvae eval` reports. Every estimate is a mean over the test images of each
/// image's own estimate (itself a mean over its samples), and carries the standard
/// error of that mean: the sample standard deviation of the per-image estimates over
/// the square root of the image count. It covers the noise of the samples and the
/// spread between images, so two estimates from different noise (or an independent
/// implementation on the same images) should agree within about two of them.
#[derive(Serialize, Debug)]
pub struct EvalReport {
    pub test_images: usize,
    /// Importance samples per image.
    pub samples: usize,
    /// The seed of the noise (stream Importance: sample k, the image's place).
    pub seed: u64,
    /// The single-sample ELBO the training program prints, averaged over the samples
    /// (nats per image): -reconstruction - kl.
    pub elbo: f64,
    pub elbo_se: f64,
    /// -log p(x|z) at the sampled z.
    pub reconstruction: f64,
    pub reconstruction_se: f64,
    /// log q(z|x) - log p(z) at the sampled z: the Monte Carlo KL of the training loss.
    pub kl: f64,
    pub kl_se: f64,
    /// KL(q(z|x) || p(z)) in closed form: exact given the encoder (no sampling noise).
    pub kl_closed_form: f64,
    pub kl_closed_form_se: f64,
    /// The ELBO with the closed-form KL: -reconstruction - kl_closed_form.
    pub elbo_closed_form_kl: f64,
    pub elbo_closed_form_kl_se: f64,
    /// The importance-weighted bound on log p(x) with `samples` samples (IWAE; the ELBO
    /// for 1 sample, tighter as the samples grow).
    pub log_px: f64,
    pub log_px_se: f64,
    /// Wall-clock seconds of the evaluation.
    pub seconds: f64,
}

/// The mean of `v` and its standard error (sample standard deviation / sqrt(n)).
pub fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// `cvae eval`: the test-set ELBO with its two terms and the closed-form KL, and the
/// importance-weighted log p(x) with `samples` samples, each with its standard error.
pub fn evaluate(
    s: &Session,
    samples: usize,
    seed: u64,
    data_dir: Option<&Path>,
    limit: Option<usize>,
    show_progress: bool,
) -> Result<EvalReport> {
    let test = s.test_split(data_dir, limit)?;
    evaluate_images(s, &test.to_f32(s.ck.config.binarize), samples, seed, show_progress)
}

/// `evaluate` on preprocessed images `x` (image i is at place i of the set).
pub fn evaluate_images(s: &Session, x: &[f32], samples: usize, seed: u64, show_progress: bool) -> Result<EvalReport> {
    if samples == 0 {
        bail!("--samples must be at least 1");
    }
    let images = x.len() / s.model.image.len();
    let t0 = std::time::Instant::now();
    let mut t = s.runner(100.min(images).max(1))?;
    let bar = progress_bar(show_progress, (images * samples) as u64);
    let key = Rng::new(seed).key(Stream::Importance);
    let terms = t.importance_terms(x, 0, samples, key, &mut |n| bar.inc(n as u64)).context("evaluating the test images")?;
    bar.finish_and_clear();
    let stat = |f: &dyn Fn(&ImageTerms) -> f64| mean_se(&terms.iter().map(f).collect::<Vec<_>>());
    let (elbo, elbo_se) = stat(&|t| t.elbo());
    let (reconstruction, reconstruction_se) = stat(&|t| t.reconstruction());
    let (kl, kl_se) = stat(&|t| t.kl());
    let (kl_closed_form, kl_closed_form_se) = stat(&|t| t.kl_closed);
    let (elbo_closed_form_kl, elbo_closed_form_kl_se) = stat(&|t| -t.reconstruction() - t.kl_closed);
    let (log_px, log_px_se) = stat(&|t| t.log_px());
    Ok(EvalReport {
        test_images: images,
        samples,
        seed,
        elbo,
        elbo_se,
        reconstruction,
        reconstruction_se,
        kl,
        kl_se,
        kl_closed_form,
        kl_closed_form_se,
        elbo_closed_form_kl,
        elbo_closed_form_kl_se,
        log_px,
        log_px_se,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A progress bar with decodings/s and ETA on a terminal; hidden otherwise.
fn progress_bar(show: bool, len: u64) -> indicatif::ProgressBar {
    if !show || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template("evaluating [{bar:30}] {pos}/{len} image samples, {per_sec}, ETA {eta}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}
