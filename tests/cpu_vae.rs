//! The whole CPU VAE: its loss gradient against central differences, and a short
//! training run that must lower the loss.

mod common;

use common::rand_vec;
use cvae::cpu::vae::{backward, forward, train_step, OptState};
use cvae::data::Dataset;
use cvae::model::{Activation, Heads, KlKind, Layer, LossSpec, Model, Padding, Preset, Shape};
use cvae::rng::{Rng, Stream};

/// A small model with every layer kind, both paddings and both strides, so the
/// check is fast: 8x8 images, latent 3.
fn tiny(kl: KlKind) -> Model {
    use Activation::*;
    let enc = [
        Layer::Conv2D { filters: 3, kernel: 3, stride: 2, padding: Padding::Valid, activation: Relu },
        Layer::Conv2D { filters: 4, kernel: 3, stride: 1, padding: Padding::Same, activation: Relu },
        Layer::Flatten,
        Layer::Dense { units: 6, activation: Linear },
    ];
    let dec = [
        Layer::Dense { units: 4 * 4 * 2, activation: Relu },
        Layer::Reshape { h: 4, w: 4, c: 2 },
        Layer::Conv2DTranspose { filters: 3, kernel: 3, stride: 2, padding: Padding::Same, activation: Relu },
        Layer::Conv2D { filters: 1, kernel: 3, stride: 1, padding: Padding::Same, activation: Linear },
    ];
    Model::new(
        Preset::TfCvae,
        3,
        Shape::Image { h: 8, w: 8, c: 1 },
        &enc,
        &dec,
        Heads::Split,
        LossSpec { recon_scale: 1.0, kl, kl_scale: 0.5 },
    )
    .unwrap()
}

/// The loss is piecewise smooth (ReLU kinks), so per-parameter differences can
/// straddle a kink. The check is therefore directional, per tensor: for a
/// direction v over one tensor, (L(p + hv) - L(p - hv)) / 2h against g . v, with
/// h = 1e-3. Two errors are expected: the f32 forward pass of L ~ 45 carries ~5e-5
/// of rounding noise (hundreds of rounded terms of size ~1), ~2.5e-2 after dividing
/// by 2h; and ReLUs whose input crosses zero within +-h bias the difference by O(h)
/// (seen: up to 2.3 % for the decoder's first Dense, shrinking linearly with h).
/// v follows the signs of g (random magnitudes 0.5-1) so g . v is O(1-10) and a
/// wiring mistake shows as an error of tens of percent or a wrong sign.
/// Tolerance: 3e-2 absolute + 3 % relative.
#[test]
fn whole_loss_gradient_matches_central_differences() {
    for kl in [KlKind::Mc, KlKind::Analytic] {
        let model = tiny(kl);
        let batch = 3;
        let params = model.init_params(11);
        let params: Vec<f32> = params.iter().zip(rand_vec(params.len(), 30, 0.05)).map(|(p, r)| p + r).collect();
        let x: Vec<f32> = rand_vec(batch * 64, 31, 1.0).iter().map(|&v| if v > 0.2 { 1.0 } else { 0.0 }).collect();
        let eps = Rng::new(5).normals(Stream::Noise, 0, batch * model.latent);
        let pass = forward(&model, &params, &x, &eps, batch);
        let grads = backward(&model, &params, &pass, &x);
        let h = 1e-3f32;
        for (t, p) in model.params.iter().enumerate() {
            // Along the gradient's signs, so the change in L is large against f32 noise.
            let v: Vec<f32> = rand_vec(p.len, 100 + t as u32, 0.5)
                .iter()
                .zip(&grads[p.offset..p.offset + p.len])
                .map(|(r, g)| (0.5 + r.abs()).copysign(*g))
                .collect();
            let at = |sign: f32| {
                let mut q = params.clone();
                for (i, vi) in v.iter().enumerate() {
                    q[p.offset + i] += sign * h * vi;
                }
                forward(&model, &q, &x, &eps, batch).loss as f64
            };
            let numeric = (at(1.0) - at(-1.0)) / (2.0 * h as f64);
            let analytic: f64 = v.iter().enumerate().map(|(i, &vi)| vi as f64 * grads[p.offset + i] as f64).sum();
            let err = (numeric - analytic).abs();
            assert!(
                err <= 3e-2 + 3e-2 * analytic.abs(),
                "{kl:?} {}: directional derivative {analytic} vs central difference {numeric} (abs error {err:.3e})",
                p.name
            );
        }
    }
}

/// A few hundred steps of the real tf-cvae on 200 MNIST images must lower the loss clearly.
#[test]
fn cpu_training_lowers_the_loss() {
    let model = Model::preset(Preset::TfCvae, 8, KlKind::Mc).unwrap();
    let opt = Preset::TfCvae.default_optimizer().with_lr(1e-3);
    let data = Dataset::embedded().unwrap();
    let mut train = data.train.clone();
    train.truncate(200);
    let x = train.to_f32(true);
    let rng = Rng::new(1);
    let mut params = model.init_params(1);
    let mut state = OptState::new(&opt, model.num_params);
    let batch = 20;
    let pixels = model.image.len();
    let mut losses = Vec::new();
    for step in 0..200 {
        let b = step % (200 / batch);
        let xb = &x[b * batch * pixels..(b + 1) * batch * pixels];
        losses.push(train_step(&model, &opt, &mut params, &mut state, xb, &rng, batch));
    }
    let first = losses[..10].iter().sum::<f32>() / 10.0;
    let last = losses[190..].iter().sum::<f32>() / 10.0;
    assert!(losses.iter().all(|l| l.is_finite()));
    // Untrained, the loss is ~545 (784 pixels at ln 2 each plus KL); a working step
    // gets well under 250 in 200 steps.
    assert!(first > 400.0 && last < 250.0, "loss went from {first} to {last}");
}
