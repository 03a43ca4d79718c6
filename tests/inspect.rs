//! The look-inside commands on a tiny checkpoint: each writes a picture of the
//! expected size that is not blank; eval gives finite, ordered numbers.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cvae::gpu::AdapterChoice;
use cvae::inspect::{self, Axes, Session};
use cvae::model::{KlKind, Preset};
use cvae::train::{self, RunOptions, TrainConfig};

/// Two epochs of tf-cvae (latent 3) on 512 images: enough for decodings to differ.
fn run_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        common::vulkan();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("inspect_run");
        let _ = std::fs::remove_dir_all(&dir);
        let config = TrainConfig {
            preset: Preset::TfCvae,
            latent_dim: 3,
            batch_size: 32,
            epochs: 2,
            lr: 2e-3,
            seed: 1,
            kl: KlKind::Mc,
            binarize: true,
            train_size: 512,
            test_size: 40,
            data_dir: None,
            kernels: Default::default(),
            init_from: None,
        };
        train::run(
            config,
            &RunOptions {
                out: dir.clone(),
                quiet: true,
                kernel_cache: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel_cache")),
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        dir
    })
}

fn session() -> Session {
    Session::open(&inspect::Source::Path(run_dir().clone()), AdapterChoice::Auto).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Open a PNG, check its size, and that it is not one flat color.
fn check_png(path: &Path, w: u32, h: u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_luma8();
    assert_eq!(img.dimensions(), (w, h), "{}", path.display());
    let px: Vec<f64> = img.pixels().map(|p| p.0[0] as f64).collect();
    let mean = px.iter().sum::<f64>() / px.len() as f64;
    let sd = (px.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / px.len() as f64).sqrt();
    assert!(sd > 5.0, "{} looks blank (pixel standard deviation {sd:.2})", path.display());
}

fn out(name: &str) -> Option<PathBuf> {
    Some(run_dir().join(name))
}

#[test]
fn sample_writes_a_square_grid() {
    let _v = common::validated("sample_writes_a_square_grid");
    let s = session();
    let p = inspect::sample(&s, 9, 3, 1.0, out("t_samples.png")).unwrap();
    // 3 x 3 cells of 28 * 2 pixels with 2-pixel gaps.
    check_png(&p, 3 * 58 + 2, 3 * 58 + 2);
}

#[test]
fn reconstruct_puts_originals_over_reconstructions() {
    let _v = common::validated("reconstruct_puts_originals_over_reconstructions");
    let s = session();
    let p = inspect::reconstruct(&s, 6, 2, false, 0, None, out("t_rec.png")).unwrap();
    check_png(&p, 6 * 58 + 2, 2 * 58 + 2);
    let p = inspect::reconstruct(&s, 12, 0, true, 0, None, out("t_rec_sample.png")).unwrap();
    check_png(&p, 10 * 58 + 2, 4 * 58 + 2);
    assert!(inspect::reconstruct(&s, 5, 9998, false, 0, None, None).is_err(), "past the end of the test set");
}

#[test]
fn manifold_on_two_axes_and_on_principal_directions() {
    let _v = common::validated("manifold_on_two_axes_and_on_principal_directions");
    let s = session();
    let p = inspect::manifold(&s, 5, &Axes::Dims(0, 2), None, out("t_manifold.png")).unwrap();
    // Digits touching: 5 x 56 pixels.
    check_png(&p, 5 * 56, 5 * 56);
    let p = inspect::manifold(&s, 4, &Axes::Pca, None, out("t_manifold_pca.png")).unwrap();
    check_png(&p, 4 * 56, 4 * 56);
    assert!(inspect::manifold(&s, 4, &Axes::Dims(0, 7), None, None).is_err(), "axis past the latent size");
    assert!("0,0".parse::<Axes>().is_err() && "x".parse::<Axes>().is_err());
}

#[test]
fn manifold_points_follow_the_normal_quantiles() {
    let _v = common::validated("manifold_points_follow_the_normal_quantiles");
    // The Keras program: row i has z[1] = ppf(p_i), column j has z[0] = ppf(p_j).
    let z = inspect::manifold_points(2, 3, &Axes::Dims(0, 1), &[0.0, 0.0], None);
    let q = 1.6448536;
    let want = [-q, -q, 0.0, -q, q, -q, -q, 0.0, 0.0, 0.0, q, 0.0, -q, q, 0.0, q, q, q];
    for (g, w) in z.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{z:?}");
    }
}

#[test]
fn scatter_plots_the_latent_means() {
    let _v = common::validated("scatter_plots_the_latent_means");
    let s = session();
    let p = inspect::scatter(&s, None, Some(40), out("t_scatter.png")).unwrap();
    let img = image::open(&p).unwrap();
    assert_eq!((img.width(), img.height()), (900, 800));
    check_png(&p, 900, 800);
}

#[test]
fn interpolate_writes_a_row_with_both_ends() {
    let _v = common::validated("interpolate_writes_a_row_with_both_ends");
    let s = session();
    let p = inspect::interpolate(&s, 0, 1, 6, false, None, out("t_interp.png")).unwrap();
    check_png(&p, 8 * 58 + 2, 58 + 2);
    let p = inspect::interpolate(&s, 3, 4, 5, true, None, out("t_slerp.png")).unwrap();
    check_png(&p, 7 * 58 + 2, 58 + 2);
    let mid = inspect::interp(&[1.0, 0.0], &[0.0, 1.0], 0.5, true);
    assert!((mid[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6, "slerp keeps the norm: {mid:?}");
}

#[test]
fn eval_reports_elbo_and_log_px() {
    let _v = common::validated("eval_reports_elbo_and_log_px");
    let s = session();
    let r = inspect::evaluate(&s, 8, 0, None, Some(20), false).unwrap();
    assert_eq!((r.test_images, r.samples), (20, 8));
    assert!(r.elbo.is_finite() && r.elbo < 0.0 && r.log_px < 0.0, "{r:?}");
    assert!((r.elbo + r.reconstruction + r.kl).abs() < 1e-6 * r.elbo.abs().max(1.0), "ELBO = -reconstruction - KL: {r:?}");
    assert!(r.elbo_se > 0.0 && r.log_px_se > 0.0 && r.kl_closed_form > 0.0, "{r:?}");
    // The importance-weighted bound is at least the ELBO in expectation; with 8 samples
    // over 20 images it may fall short by the spread of one sample only.
    assert!(r.log_px > r.elbo - 5.0, "{r:?}");
}

/// One test image repeated 250 times: every copy draws its own noise (copies 0, 100
/// and 200 used to share it, being the same row of their chunk of 100), and the mean
/// of the Monte Carlo KL over the copies lands within three of its standard errors of
/// the closed-form KL of that image (the estimator is unbiased).
#[test]
fn every_copy_of_an_image_draws_its_own_noise() {
    let _v = common::validated("every_copy_of_an_image_draws_its_own_noise");
    let s = session();
    let test = s.test_split(None, Some(1)).unwrap().to_f32(true);
    let x: Vec<f32> = test.iter().copied().cycle().take(250 * test.len()).collect();
    let mut runner = s.runner(100).unwrap();
    let key = cvae::rng::Rng::new(5).key(cvae::rng::Stream::Importance);
    let terms = runner.importance_terms(&x, 0, 1, key, &mut |_| {}).unwrap();
    let kl: Vec<f64> = terms.iter().map(|t| t.kl()).collect();
    for (a, b) in [(0, 100), (0, 200), (100, 200), (1, 101), (37, 237)] {
        assert_ne!(kl[a], kl[b], "copies {a} and {b} drew the same noise");
    }
    let closed = terms[0].kl_closed;
    assert!(terms.iter().all(|t| t.kl_closed == closed), "the closed form depends on the image only");
    let (mean, se) = inspect::mean_se(&kl);
    assert!((mean - closed).abs() < 3.0 * se, "Monte Carlo KL {mean} +- {se} vs closed form {closed}");
}

/// `cvae eval --samples 1` estimates what `cvae train` printed for the same
/// checkpoint, with other noise: they agree within three standard errors. And the
/// importance-weighted bound rises with the sample count.
#[test]
fn eval_agrees_with_training_and_tightens_with_more_samples() {
    let _v = common::validated("eval_agrees_with_training_and_tightens_with_more_samples");
    let s = session();
    let printed = train::read_metrics(run_dir()).unwrap().last().unwrap().2;
    let one = inspect::evaluate(&s, 1, 0, None, Some(40), false).unwrap();
    assert_eq!(one.test_images, 40);
    assert!((one.elbo - printed).abs() < 3.0 * one.elbo_se, "eval {} +- {} vs train {printed}", one.elbo, one.elbo_se);
    assert!((one.log_px - one.elbo).abs() < 1e-9, "with one sample the bound is the ELBO: {one:?}");
    let ten = inspect::evaluate(&s, 10, 0, None, Some(20), false).unwrap();
    let hundred = inspect::evaluate(&s, 100, 0, None, Some(20), false).unwrap();
    let one20 = inspect::evaluate(&s, 1, 0, None, Some(20), false).unwrap();
    assert!(
        one20.log_px < ten.log_px && ten.log_px < hundred.log_px,
        "log p(x) for K = 1, 10, 100: {} {} {}",
        one20.log_px,
        ten.log_px,
        hundred.log_px
    );
}

#[test]
fn gif_is_rebuilt_from_the_epoch_grids() {
    let _v = common::validated("gif_is_rebuilt_from_the_epoch_grids");
    let dir = run_dir();
    let n = cvae::images::write_gif(dir, &dir.join("t_rebuilt.gif")).unwrap();
    // Epochs 0, 1, 2: frames where round(2 sqrt(i)) grows (0, 2, 2.83 -> 3), then the last again.
    assert_eq!(n, 4);
    // For 10 grids: 2 sqrt(i) = 0, 2, 2.8, 3.5, 4, 4.5, 4.9, 5.3, 5.7, 6 keeps 0, 1, 2, 4, 6, 8; then 9.
    assert_eq!(cvae::images::gif_frames(10), vec![0, 1, 2, 4, 6, 8, 9]);
    let g = image::open(dir.join("t_rebuilt.gif")).unwrap();
    assert_eq!(g.width(), 4 * (28 * 4 + 2) + 2);
}
