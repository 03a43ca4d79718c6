//! The GPU trainer end to end, on lavapipe and on SwiftShader under the validation
//! layer: whole-step parity with the CPU reference for both presets, and a short real run that writes every file, lowers the loss, resumes
//! to the same bits as an uninterrupted run, and repeats itself exactly.

#[macro_use]
mod common;

use std::path::Path;

use common::Driver;
use common::{assert_within, tmp_path, U};
use cvae::checkpoint;
use cvae::cpu;
use cvae::cpu::vae::OptState;
use cvae::data::Dataset;
use cvae::gpu::kernels::Kernels;
use cvae::gpu::ops::Variant;
use cvae::gpu::plan::{self, Plan};
use cvae::gpu::trainer::{Trainer, TrainerSpec};
use cvae::gpu::Gpu;
use cvae::model::{Model, Optimizer, Preset};
use cvae::rng::{Rng, Stream};
use cvae::train::{self, RunOptions, TrainConfig};

fn gpu() -> Gpu {
    common::driver().open()
}

/// Three training steps on the GPU against three steps of the CPU reference, from the
/// same initial weights, batches and noise.
///
/// - Step losses: a sum over ~800 terms per example, then a mean: 1e-5 relative.
/// - Step-1 gradients (identical inputs): each is a chain of ~8 layers of f32 sums of
///   up to ~80,000 terms; sqrt(K) u ~ 2e-5 per layer, ~2e-4 over the chain, relative
///   to the tensor's largest gradient. Bound: 2e-3 of the tensor's max |g| + 1e-3 |g|.
/// - Parameters after 3 steps: Adam and RMSprop normalise each gradient, so an update
///   moves by at most u_max = 4 lr (RMSprop's first step is lr / sqrt(1 - rho) = 3.2 lr)
///   and reacts to a gradient error d with a relative change ~ d / |g|. With d the
///   measured step-1 gradient difference of the tensor (times 8 for the later steps,
///   whose parameters already differ), each step contributes min(2 u_max, u_max 8 d / |g|),
///   plus a few ULP of the parameter.
fn step_parity(preset: Preset, batch: usize, variant: Variant) {
    let gpu = gpu();
    let kernels = Kernels::new(&gpu).unwrap();
    let model = Model::preset(preset, preset.default_latent(), preset.default_kl()).unwrap();
    let opt = preset.default_optimizer();
    let seed = 3;
    let data = Dataset::embedded().unwrap();
    let (mut train, mut test) = (data.train.clone(), data.test.clone());
    train.truncate(3 * batch);
    test.truncate(batch);
    let init = model.init_params(seed);
    let spec = TrainerSpec {
        model: &model,
        optimizer: opt,
        batch,
        seed,
        binarize: true,
        train: &train,
        test: &test,
        params: &init,
        fixed_z: &[],
        plan: Plan::uniform(&model, variant),
    };
    let mut trainer = Trainer::new(&gpu, &kernels, spec).unwrap();

    let rng = Rng::new(seed);
    let mut params = init.clone();
    let mut state = OptState::new(&opt, model.num_params);
    let order = rng.permutation(1, train.len());
    trainer.begin_epoch(1);
    let pixels = model.image.len();
    let mut cpu_grads = Vec::new();
    let mut grad_diff = vec![0.0f64; model.params.len()];
    for j in 0..3 {
        trainer.train_step(j).unwrap();
        let x = cpu::gather::gather_images(&train.images, &order, j * batch, batch, pixels, true);
        let eps = rng.normals(Stream::Noise, state.step as u32, batch * model.latent);
        let pass = cpu::vae::forward(&model, &params, &x, &eps, batch);
        let grads = cpu::vae::backward(&model, &params, &pass, &x);
        let gpu_loss = trainer.read_train_losses(j + 1).unwrap()[j];
        assert!((gpu_loss - pass.loss).abs() <= 1e-5 * pass.loss.abs(), "{preset} step {j}: GPU loss {gpu_loss} vs CPU {}", pass.loss);
        if j == 0 {
            let g = trainer.read_grads().unwrap();
            for (t, p) in model.params.iter().enumerate() {
                let want = &grads[p.offset..p.offset + p.len];
                let got = &g[p.offset..p.offset + p.len];
                let max = want.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64;
                let bound: Vec<f64> = want.iter().map(|&w| 2e-3 * max + 1e-3 * w.abs() as f64 + 1e-30).collect();
                let (abs, rel) = assert_within(&format!("{preset} step-1 gradient of {}", p.name), got, want, &bound);
                eprintln!("PARITY {preset} gradient {} max abs {abs:.2e} max rel {rel:.2e}", p.name);
                grad_diff[t] = got.iter().zip(want).map(|(a, b)| (a - b).abs() as f64).fold(0.0, f64::max);
            }
        }
        cpu::vae::optimizer_step(&opt, &mut params, &grads, &mut state);
        cpu_grads.push(grads);
    }
    let (gpu_params, _) = trainer.read_state().unwrap();
    let u_max = 4.0 * opt.lr() as f64;
    for (t, p) in model.params.iter().enumerate() {
        let d = grad_diff[t].max(1e-12);
        let bound: Vec<f64> = (p.offset..p.offset + p.len)
            .map(|i| {
                let steps: f64 = cpu_grads.iter().map(|g| (2.0 * u_max).min(u_max * 8.0 * d / (g[i].abs() as f64).max(1e-30))).sum();
                steps + 48.0 * U * params[i].abs() as f64
            })
            .collect();
        let (abs, rel) = assert_within(
            &format!("{preset} parameter {} after 3 steps", p.name),
            &gpu_params[p.offset..p.offset + p.len],
            &params[p.offset..p.offset + p.len],
            &bound,
        );
        eprintln!("PARITY {preset} 3-step parameter {} max abs {abs:.2e} max rel {rel:.2e}", p.name);
    }
    assert!(matches!((preset, opt), (Preset::TfCvae, Optimizer::Adam { .. }) | (Preset::KerasVae, Optimizer::RmsProp { .. })));
}

fn three_gpu_steps_equal_three_cpu_steps_tf_cvae() {
    step_parity(Preset::TfCvae, 8, Variant::Auto);
}

/// The subgroup family shares packed textures across a step's forward and backward
/// passes (`ops::Packs`): the whole step must still be the CPU's.
fn three_gpu_steps_equal_three_cpu_steps_through_the_subgroup_family() {
    if !plan::offered(&gpu()).contains(&Variant::Subgroup) {
        eprintln!("this adapter has no subgroup family (lavapipe has): the step runs the default kernels");
    }
    step_parity(Preset::TfCvae, 8, Variant::Subgroup);
}

fn three_gpu_steps_equal_three_cpu_steps_keras_vae() {
    step_parity(Preset::KerasVae, 5, Variant::Auto);
}

fn config(epochs: u32) -> TrainConfig {
    TrainConfig {
        preset: Preset::TfCvae,
        latent_dim: 8,
        batch_size: 32,
        epochs,
        lr: 1e-3,
        seed: 7,
        kl: cvae::model::KlKind::Mc,
        binarize: true,
        // 150 is not a multiple of 32: the last batch of each epoch is a short one.
        train_size: 150,
        test_size: 70,
        data_dir: None,
        kernels: Default::default(),
        init_from: None,
    }
}

/// Run options with one kernel family forced: runs compared bit for bit must not
/// depend on a measured choice (`tuned_kernels_are_kept_on_resume` covers that).
fn opts(out: &Path, resume: bool) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        quiet: true,
        resume,
        variant: Variant::Blocked,
        adapter: common::driver().adapter(),
        ..Default::default()
    }
}

/// The deterministic columns of metrics.csv (epoch, train loss, test ELBO).
fn metrics(out: &Path) -> Vec<(u32, f64, f64)> {
    train::read_metrics(out).unwrap()
}

fn a_short_run_writes_everything_resumes_exactly_and_repeats() {
    let a = tmp_path("run_a");
    train::run(config(2), &opts(&a, false)).unwrap_or_else(|e| panic!("{e:#}"));
    for f in [
        "config.json",
        "metrics.csv",
        "elbo.png",
        "checkpoint.safetensors",
        "cvae.gif",
        "image_at_epoch_0000.png",
        "image_at_epoch_0001.png",
        "image_at_epoch_0002.png",
    ] {
        assert!(a.join(f).is_file(), "{f} missing from the run folder");
    }
    let grid = image::open(a.join("image_at_epoch_0002.png")).unwrap().to_luma8();
    assert_eq!(grid.dimensions(), (4 * (28 * 4 + 2) + 2, 4 * (28 * 4 + 2) + 2));
    let ma = metrics(&a);
    assert_eq!(ma.len(), 2);
    assert!(ma[1].1 < ma[0].1, "training loss did not decrease: {ma:?}");
    assert!(ma.iter().all(|r| r.2 < 0.0 && r.2 > -600.0), "implausible ELBO: {ma:?}");

    // A second run refuses the same folder unless asked.
    let e = train::run(config(2), &opts(&a, false)).err().expect("must refuse to overwrite");
    assert!(format!("{e:#}").contains("already holds a run"), "{e:#}");

    // One epoch, then --resume to two: the same bits as the uninterrupted run.
    let b = tmp_path("run_b");
    train::run(config(1), &opts(&b, false)).unwrap();
    assert_eq!(checkpoint::load(&b).unwrap().epoch, 1);
    train::run(config(2), &opts(&b, true)).unwrap();
    let (ca, cb) = (checkpoint::load(&a).unwrap(), checkpoint::load(&b).unwrap());
    assert_eq!((ca.epoch, ca.step), (cb.epoch, cb.step));
    assert!(ca.params == cb.params && ca.slots == cb.slots, "resumed parameters differ from the uninterrupted run's");
    // Determinism: the same seed on the same adapter gives identical metrics.
    assert_eq!(ma, metrics(&b), "metrics differ between identical runs");
}

/// A device lost in the middle of training (here: destroyed) stops the run with a
/// message instead of a panic.
fn a_lost_device_is_an_error_not_a_panic() {
    let gpu = gpu();
    let kernels = Kernels::new(&gpu).unwrap();
    let model = Model::preset(Preset::TfCvae, 4, cvae::model::KlKind::Mc).unwrap();
    let data = Dataset::embedded().unwrap();
    let (mut train, mut test) = (data.train.clone(), data.test.clone());
    train.truncate(32);
    test.truncate(16);
    let init = model.init_params(1);
    let spec = TrainerSpec {
        model: &model,
        optimizer: Preset::TfCvae.default_optimizer(),
        batch: 16,
        seed: 1,
        binarize: true,
        train: &train,
        test: &test,
        params: &init,
        fixed_z: &[],
        plan: Default::default(),
    };
    let mut t = Trainer::new(&gpu, &kernels, spec).unwrap();
    t.begin_epoch(1);
    t.train_step(0).unwrap();
    gpu.device.destroy();
    let r = t.train_step(1).and_then(|_| t.read_train_losses(2).map(|_| 0));
    let e = format!("{:#}", r.expect_err("a destroyed device must give an error"));
    assert!(e.contains("lost") || e.contains("GPU"), "{e}");
}

/// The Keras preset trains on its own weighted loss, but the test set is scored with
/// the ELBO (summed cross-entropy plus the closed-form KL), comparable across presets.
fn keras_vae_trains_and_reports_a_true_elbo() {
    let out = tmp_path("run_keras");
    let config = TrainConfig {
        preset: Preset::KerasVae,
        latent_dim: 2,
        batch_size: 16,
        epochs: 1,
        lr: 1e-3,
        kl: cvae::model::KlKind::Analytic,
        train_size: 48,
        test_size: 20,
        ..config(1)
    };
    train::run(config, &opts(&out, false)).unwrap_or_else(|e| panic!("{e:#}"));
    let m = metrics(&out);
    // The Keras loss is a per-pixel mean (about 0.7 untrained); the ELBO is in nats per image.
    assert!(m[0].1 < 1.0 && m[0].2 < -100.0 && m[0].2 > -800.0, "{m:?}");
}

/// The kernels are chosen by measurement when a run starts and written into its config
/// and checkpoint; `--resume` computes with those, whatever the cache says by then, so
/// a resumed run still ends with the same bits as an uninterrupted one.
fn tuned_kernels_are_kept_on_resume() {
    let cache = tmp_path("tuned_cache");
    let tuned = |out: &Path, resume: bool| RunOptions { variant: Variant::Auto, kernel_cache: Some(cache.clone()), ..opts(out, resume) };
    let a = tmp_path("tuned_a");
    train::run(config(2), &tuned(&a, false)).unwrap_or_else(|e| panic!("{e:#}"));
    let plan = checkpoint::load(&a).unwrap().config.kernels;
    assert_eq!(plan.0.len(), cvae::gpu::plan::sites(&config(2).model().unwrap()).len(), "a plan for every layer op: {plan:?}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("config.json")).unwrap()).unwrap();
    assert_eq!(json["kernels"].as_object().map(|o| o.len()), Some(plan.0.len()), "config.json names the kernels: {json}");

    let b = tmp_path("tuned_b");
    train::run(config(1), &tuned(&b, false)).unwrap();
    // The cache now says something else for every layer op.
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let mut cached: serde_json::Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    for (_, v) in cached["plan"].as_object_mut().unwrap() {
        *v = serde_json::json!(if v == "portable" { "tiled" } else { "portable" });
    }
    std::fs::write(&files[0], serde_json::to_vec(&cached).unwrap()).unwrap();
    train::run(config(2), &tuned(&b, true)).unwrap();
    let (ca, cb) = (checkpoint::load(&a).unwrap(), checkpoint::load(&b).unwrap());
    assert_eq!(cb.config.kernels, plan, "the resumed run kept its own kernels");
    assert!(ca.params == cb.params && ca.slots == cb.slots, "resumed parameters differ from the uninterrupted run's");
}

on_every_driver!(
    three_gpu_steps_equal_three_cpu_steps_tf_cvae,
    three_gpu_steps_equal_three_cpu_steps_through_the_subgroup_family,
    three_gpu_steps_equal_three_cpu_steps_keras_vae,
    a_short_run_writes_everything_resumes_exactly_and_repeats,
    a_lost_device_is_an_error_not_a_panic,
    keras_vae_trains_and_reports_a_true_elbo,
    tuned_kernels_are_kept_on_resume,
);

/// The same seeded run on both drivers, with the same kernel family forced on both
/// (blocked, tiled, portable): train loss and test ELBO agree each epoch to f32 rounding.
///
/// Both drivers run the same WGSL in the same order (no atomics, fixed reductions) on
/// the same data and noise (bit for bit, `rng_stream_and_reparameterize_match_the_cpu`);
/// they may differ only in fusing a multiply-add and in `exp`/`log`'s last bits. A loss
/// evaluation passes every value through sums of at most K terms (the largest fan-in or
/// fan-out of a layer), each differing by the random-walk estimate of `dot_bound`,
/// 8 sqrt(K) u, relative to the loss; each of the S Adam steps before an evaluation moves
/// the parameters by normalised amounts that differ as much again. So an epoch's figures
/// may differ by 8 sqrt(K) u (S + 1) of their size (K = 2,304 here, S = 3 and 6:
/// 9.2e-5 and 1.6e-4).
#[test]
fn both_drivers_train_to_the_same_elbo() {
    let _v = common::validated("both_drivers_train_to_the_same_elbo");
    // Three steps an epoch and a short test set: tiled and portable are slow on CPU drivers.
    let small = TrainConfig { batch_size: 16, train_size: 48, test_size: 24, ..config(2) };
    let model = small.model().unwrap();
    let k = model.params.iter().filter_map(|p| p.glorot).map(|(i, o)| i.max(o)).max().unwrap();
    let steps_per_epoch = small.train_size.div_ceil(small.batch_size) as f64;
    for variant in [Variant::Blocked, Variant::Tiled, Variant::Portable] {
        let runs: Vec<Vec<(u32, f64, f64)>> = Driver::ALL
            .iter()
            .map(|d| {
                let out = tmp_path(&format!("agree_{}_{}", variant.name(), d.name()));
                let o = RunOptions { variant, adapter: d.adapter(), ..opts(&out, false) };
                train::run(small.clone(), &o).unwrap_or_else(|e| panic!("{} on {}: {e:#}", variant.name(), d.name()));
                metrics(&out)
            })
            .collect();
        assert_eq!(runs[0].len(), 2, "{runs:?}");
        for (a, b) in runs[0].iter().zip(&runs[1]) {
            let tol = 8.0 * (k as f64).sqrt() * U * (steps_per_epoch * a.0 as f64 + 1.0);
            let (dl, de) = ((a.1 - b.1).abs() / a.1.abs(), (a.2 - b.2).abs() / a.2.abs());
            let says = format!(
                "{} epoch {}: train loss {:.6} (lavapipe) vs {:.6} (swiftshader), rel {dl:.1e}; test ELBO {:.6} vs {:.6}, rel {de:.1e}; bound {tol:.1e}",
                variant.name(),
                a.0,
                a.1,
                b.1,
                a.2,
                b.2
            );
            eprintln!("AGREE {says}");
            assert!(dl <= tol && de <= tol, "the drivers disagree: {says}");
        }
    }
}
