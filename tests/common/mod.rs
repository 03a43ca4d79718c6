//! Helpers shared by the test files: deterministic random data, error reports, scratch
//! folders and the cvae binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cvae::model::{ConvGeom, Padding};
use cvae::rng::{Rng, Stream};

/// Small conv shapes: batch 1 and odd sizes, both paddings, both strides, a 2x2
/// kernel. As a Conv2D, or a Conv2DTranspose with the same fields.
pub fn small_conv_cases(transpose: bool) -> Vec<ConvGeom> {
    conv_cases_from(
        transpose,
        &[
            (1, 5, 5, 1, 2, 3, 1, Padding::Same),
            (2, 7, 6, 3, 4, 3, 2, Padding::Same),
            (1, 7, 7, 2, 3, 3, 2, Padding::Valid),
            (3, 6, 5, 2, 2, 3, 1, Padding::Valid),
            (2, 4, 4, 3, 2, 2, 2, Padding::Same),
        ],
    )
}

/// (batch, h, w, in channels, filters, kernel, stride, padding).
pub type ConvCase = (usize, usize, usize, usize, usize, usize, usize, Padding);

/// Conv cases as geometries.
pub fn conv_cases_from(transpose: bool, cases: &[ConvCase]) -> Vec<ConvGeom> {
    cases
        .iter()
        .map(|&(batch, h, w, c, f, k, s, pad)| {
            if transpose {
                ConvGeom::conv2d_transpose(batch, (h, w, c), f, k, s, pad)
            } else {
                ConvGeom::conv2d(batch, (h, w, c), f, k, s, pad)
            }
        })
        .collect()
}

/// Deterministic values in [-scale, scale), different for each `tag`.
pub fn rand_vec(n: usize, tag: u32, scale: f32) -> Vec<f32> {
    let r = Rng::new(0x5eed_0000 + tag as u64);
    (0..n).map(|i| (2.0 * r.uniform(Stream::Init, tag, i as u32) - 1.0) * scale).collect()
}

/// Largest absolute and relative differences and where the worst one is.
pub struct Diff {
    pub max_abs: f64,
    pub max_rel: f64,
    pub worst: usize,
    pub worst_got: f64,
    pub worst_want: f64,
}

/// Compare element by element with `|got - want| <= atol + rtol * |want|`;
/// returns the statistics and whether all passed.
pub fn compare(got: &[f32], want: &[f32], atol: f64, rtol: f64) -> (Diff, bool) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let mut d = Diff { max_abs: 0.0, max_rel: 0.0, worst: 0, worst_got: 0.0, worst_want: 0.0 };
    let mut ok = true;
    let mut worst_excess = f64::NEG_INFINITY;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g as f64, w as f64);
        let abs = (g - w).abs();
        let rel = abs / w.abs().max(1e-30);
        if !g.is_finite() {
            ok = false;
        }
        d.max_abs = d.max_abs.max(abs);
        if w.abs() > atol {
            d.max_rel = d.max_rel.max(rel);
        }
        let excess = abs - (atol + rtol * w.abs());
        if excess > worst_excess || !g.is_finite() {
            worst_excess = excess;
            d.worst = i;
            d.worst_got = g;
            d.worst_want = w;
        }
        if excess > 0.0 {
            ok = false;
        }
    }
    (d, ok)
}

/// Assert closeness, printing max abs/rel error and the worst element on failure.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f64, rtol: f64) -> Diff {
    let (d, ok) = compare(got, want, atol, rtol);
    assert!(
        ok,
        "{what}: max abs error {:.3e}, max rel error {:.3e}; worst at index {}: got {} want {} (atol {atol:e}, rtol {rtol:e})",
        d.max_abs, d.max_rel, d.worst, d.worst_got, d.worst_want
    );
    d
}

/// Central differences of `f` at `x` for every element (or every `stride`-th one).
pub fn numeric_grad(f: &dyn Fn(&[f32]) -> f64, x: &[f32], h: f32, stride: usize) -> Vec<(usize, f32)> {
    let mut xs = x.to_vec();
    (0..x.len())
        .step_by(stride.max(1))
        .map(|i| {
            let orig = xs[i];
            xs[i] = orig + h;
            let up = f(&xs);
            xs[i] = orig - h;
            let down = f(&xs);
            xs[i] = orig;
            // The step actually taken, after f32 rounding of x +- h.
            let step = ((orig + h) as f64) - ((orig - h) as f64);
            (i, ((up - down) / step) as f32)
        })
        .collect()
}

/// Check an analytic gradient against central differences.
pub fn gradcheck(what: &str, f: &dyn Fn(&[f32]) -> f64, x: &[f32], analytic: &[f32], h: f32, stride: usize, atol: f64, rtol: f64) {
    let num = numeric_grad(f, x, h, stride);
    let got: Vec<f32> = num.iter().map(|&(i, _)| analytic[i]).collect();
    let want: Vec<f32> = num.iter().map(|&(_, g)| g).collect();
    assert_close(&format!("{what} (analytic vs central differences)"), &got, &want, atol, rtol);
}

/// f64 dot product, the scalar objective of the linear-op checks.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// f32's unit roundoff.
pub const U: f64 = 1.0 / 16_777_216.0;

/// Assert |got - want| <= bound[i] for every element; on failure report the max
/// absolute and relative errors and the worst element. Returns (max abs, max rel).
pub fn assert_within(what: &str, got: &[f32], want: &[f32], bound: &[f64]) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let (mut max_abs, mut max_rel, mut worst, mut worst_ratio) = (0.0f64, 0.0f64, 0usize, 0.0f64);
    for i in 0..got.len() {
        let (g, w) = (got[i] as f64, want[i] as f64);
        let abs = if g.is_finite() { (g - w).abs() } else { f64::INFINITY };
        max_abs = max_abs.max(abs);
        if w != 0.0 {
            max_rel = max_rel.max(abs / w.abs());
        }
        let ratio = abs / bound[i].max(1e-38);
        if ratio > worst_ratio {
            worst_ratio = ratio;
            worst = i;
        }
    }
    assert!(
        worst_ratio <= 1.0,
        "{what}: max abs error {max_abs:.3e}, max rel error {max_rel:.3e}; worst at index {worst}: got {} want {} (bound {:.3e}, {} elements)",
        got[worst],
        want[worst],
        bound[worst],
        got.len()
    );
    (max_abs, max_rel)
}

/// Bound for a sum of `k` products whose absolute values add up to `mag`:
/// two different f32 summation orders (CPU and GPU, with or without FMA) each
/// err by about sqrt(k) * u * mag (random-walk rounding; the worst case is k * u * mag).
/// A factor 8 covers the spread of that estimate.
pub fn dot_bound(k: usize, mag: &[f32]) -> Vec<f64> {
    mag.iter().map(|&m| 8.0 * (k as f64).sqrt() * U * m as f64 + 1e-37).collect()
}

pub fn abs_vec(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// A path under the tests' scratch folder with nothing there.
pub fn tmp_path(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// An empty folder under the tests' scratch folder.
pub fn tmp_dir(name: &str) -> PathBuf {
    let d = tmp_path(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Run the cvae binary; measured kernel choices go to the tests' own cache, not the user's.
pub fn cvae(args: &[&str]) -> Output {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel_cache");
    Command::new(env!("CARGO_BIN_EXE_cvae")).args(args).env("CVAE_CACHE_DIR", cache).output().expect("the cvae binary runs")
}
