//! Central-difference gradient checks of every CPU reference op.
//!
//! Linear ops (conv, transposed conv, dense) use L = sum(y * r) in f64 with a
//! random r, and h = 1e-2: L is linear in each input, so central differences are
//! exact up to rounding. That rounding is f32's (2^-24 ~ 6e-8) on each output,
//! accumulated over up to ~300 products and ~1000 outputs: ~1e-4 absolute in L,
//! or ~5e-3 in the derivative after dividing by 2h. Hence atol 1e-2, rtol 1e-2.

mod common;

use common::{dot, gradcheck, rand_vec};
use cvae::cpu::activation::{bias_backward, relu_backward};
use cvae::cpu::conv2d::{conv2d_backward_input, conv2d_backward_kernel, conv2d_forward};
use cvae::cpu::conv2d_transpose::{conv2d_transpose_backward_input, conv2d_transpose_backward_kernel, conv2d_transpose_forward};
use cvae::cpu::dense::{dense_backward_input, dense_backward_kernel, dense_forward};
use cvae::cpu::kl::{kl_analytic_backward, kl_analytic_forward, kl_mc_backward, kl_mc_forward};
use cvae::cpu::loss::{sigmoid_cross_entropy_backward, sigmoid_cross_entropy_forward};
use cvae::cpu::reparam::reparameterize;
use cvae::model::{Activation, ConvGeom, Padding};

const LIN_ATOL: f64 = 1e-2;
const LIN_RTOL: f64 = 1e-2;

fn geoms(transpose: bool) -> Vec<ConvGeom> {
    common::small_conv_cases(transpose)
}

#[test]
fn conv2d_gradients() {
    for (n, g) in geoms(false).into_iter().enumerate() {
        let x = rand_vec(g.in_len(), 1, 1.0);
        let k = rand_vec(g.kernel_len(), 2, 0.5);
        let b = rand_vec(g.out_c, 3, 0.5);
        let r = rand_vec(g.out_len(), 4, 1.0);
        let dx = conv2d_backward_input(&g, &r, &k);
        gradcheck(
            &format!("conv2d input, {g:?}"),
            &|x| dot(&conv2d_forward(&g, x, &k, &b, Activation::Linear), &r),
            &x,
            &dx,
            1e-2,
            1,
            LIN_ATOL,
            LIN_RTOL,
        );
        let dk = conv2d_backward_kernel(&g, &x, &r);
        gradcheck(
            &format!("conv2d kernel, {g:?}"),
            &|k| dot(&conv2d_forward(&g, &x, k, &b, Activation::Linear), &r),
            &k,
            &dk,
            1e-2,
            1,
            LIN_ATOL,
            LIN_RTOL,
        );
        let db = bias_backward(&r, g.out_c);
        gradcheck(
            &format!("conv2d bias, case {n}"),
            &|b| dot(&conv2d_forward(&g, &x, &k, b, Activation::Linear), &r),
            &b,
            &db,
            1e-2,
            1,
            LIN_ATOL,
            LIN_RTOL,
        );
    }
}

#[test]
fn conv2d_transpose_gradients() {
    for (n, g) in geoms(true).into_iter().enumerate() {
        let x = rand_vec(g.in_len(), 5, 1.0);
        let k = rand_vec(g.kernel_len(), 6, 0.5);
        let b = rand_vec(g.out_c, 7, 0.5);
        let r = rand_vec(g.out_len(), 8, 1.0);
        let dx = conv2d_transpose_backward_input(&g, &r, &k);
        gradcheck(
            &format!("conv2d_transpose input, {g:?}"),
            &|x| dot(&conv2d_transpose_forward(&g, x, &k, &b, Activation::Linear), &r),
            &x,
            &dx,
            1e-2,
            1,
            LIN_ATOL,
            LIN_RTOL,
        );
        let dk = conv2d_transpose_backward_kernel(&g, &x, &r);
        gradcheck(
            &format!("conv2d_transpose kernel, {g:?}"),
            &|k| dot(&conv2d_transpose_forward(&g, &x, k, &b, Activation::Linear), &r),
            &k,
            &dk,
            1e-2,
            1,
            LIN_ATOL,
            LIN_RTOL,
        );
        let db = bias_backward(&r, g.out_c);
        gradcheck(
            &format!("conv2d_transpose bias, case {n}"),
            &|b| dot(&conv2d_transpose_forward(&g, &x, &k, b, Activation::Linear), &r),
            &b,
            &db,
            1e-2,
            1,
            LIN_ATOL,
            LIN_RTOL,
        );
    }
}

/// TensorFlow defines Conv2DTranspose as the adjoint of Conv2D with the same fields:
/// <conv(y), x> = <y, convT(x)> with the same kernel array.
#[test]
fn conv2d_transpose_is_the_adjoint_of_conv2d() {
    for g in geoms(true) {
        let conv =
            ConvGeom { batch: g.batch, in_h: g.out_h, in_w: g.out_w, in_c: g.out_c, out_h: g.in_h, out_w: g.in_w, out_c: g.in_c, ..g };
        // The forward conv that maps the transposed conv's output back must have the same output size.
        let expect = ConvGeom::conv2d(
            g.batch,
            (g.out_h, g.out_w, g.out_c),
            g.in_c,
            g.k_h,
            g.stride,
            if g.pad_top == 0 && g.out_h == (g.in_h - 1) * g.stride + g.k_h { Padding::Valid } else { Padding::Same },
        );
        assert_eq!(
            (expect.out_h, expect.out_w, expect.pad_top, expect.pad_left),
            (conv.out_h, conv.out_w, conv.pad_top, conv.pad_left),
            "{g:?}"
        );
        let k = rand_vec(g.kernel_len(), 9, 1.0);
        let x = rand_vec(g.in_len(), 10, 1.0);
        let y = rand_vec(g.out_len(), 11, 1.0);
        let zero_t = vec![0.0; g.out_c];
        let zero_c = vec![0.0; conv.out_c];
        let lhs = dot(&conv2d_forward(&conv, &y, &k, &zero_c, Activation::Linear), &x);
        let rhs = dot(&y, &conv2d_transpose_forward(&g, &x, &k, &zero_t, Activation::Linear));
        assert!((lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0), "{g:?}: {lhs} vs {rhs}");
    }
}

#[test]
fn dense_gradients() {
    for &(batch, inputs, outputs) in &[(1, 5, 3), (3, 7, 4), (4, 16, 9)] {
        let x = rand_vec(batch * inputs, 12, 1.0);
        let k = rand_vec(inputs * outputs, 13, 0.5);
        let b = rand_vec(outputs, 14, 0.5);
        let r = rand_vec(batch * outputs, 15, 1.0);
        let dx = dense_backward_input(&r, &k, inputs, outputs);
        gradcheck("dense input", &|x| dot(&dense_forward(x, &k, &b, inputs, Activation::Linear), &r), &x, &dx, 1e-2, 1, LIN_ATOL, LIN_RTOL);
        let dk = dense_backward_kernel(&x, &r, inputs, outputs);
        gradcheck(
            "dense kernel",
            &|k| dot(&dense_forward(&x, k, &b, inputs, Activation::Linear), &r),
            &k,
            &dk,
            1e-2,
            1,
            LIN_ATOL,
            LIN_RTOL,
        );
        let db = bias_backward(&r, outputs);
        gradcheck("dense bias", &|b| dot(&dense_forward(&x, &k, b, inputs, Activation::Linear), &r), &b, &db, 1e-2, 1, LIN_ATOL, LIN_RTOL);
    }
}

/// ReLU is checked away from its kink: inputs are kept at least 0.1 from zero and h = 1e-3.
#[test]
fn relu_gradient() {
    let x: Vec<f32> = rand_vec(200, 16, 1.0).iter().map(|&v| if v.abs() < 0.1 { v + 0.2f32.copysign(v) } else { v }).collect();
    let r = rand_vec(200, 17, 1.0);
    let relu = |x: &[f32]| -> Vec<f32> { x.iter().map(|v| v.max(0.0)).collect() };
    let y = relu(&x);
    let dx = relu_backward(&r, &y);
    gradcheck("relu", &|x| dot(&relu(x), &r), &x, &dx, 1e-3, 1, 1e-3, 1e-3);
}

/// Smooth pointwise functions: h = 1e-3 leaves a truncation error of h^2 f'''/6 ~ 1e-7,
/// and f32 rounding of values of size ~1 over 2h gives ~1e-4; atol 2e-3, rtol 1e-2.
#[test]
fn sigmoid_cross_entropy_gradient() {
    let (batch, pixels) = (3, 20);
    let logits = rand_vec(batch * pixels, 18, 4.0);
    let targets: Vec<f32> = rand_vec(batch * pixels, 19, 1.0).iter().map(|&v| if v > 0.0 { 1.0 } else { 0.0 }).collect();
    let scale = 0.37;
    let d = sigmoid_cross_entropy_backward(&logits, &targets, scale);
    let f = |l: &[f32]| sigmoid_cross_entropy_forward(l, &targets, pixels).iter().map(|&v| v as f64 * scale as f64).sum::<f64>();
    gradcheck("sigmoid_cross_entropy", &f, &logits, &d, 1e-3, 1, 2e-3, 1e-2);
    // The stable form agrees with the textbook one where the latter is accurate.
    for (&x, &z) in logits.iter().zip(&targets) {
        let p = 1.0 / (1.0 + (-(x as f64)).exp());
        let naive = -(z as f64 * p.ln() + (1.0 - z as f64) * (1.0 - p).ln());
        let ce = sigmoid_cross_entropy_forward(&[x], &[z], 1)[0] as f64;
        assert!((ce - naive).abs() < 1e-5, "CE({x}, {z}) = {ce}, expected {naive}");
    }
}

/// The KL backward functions return the whole gradient w.r.t. [mean | logvar]:
/// the decoder's dz through z = m + e^(lv/2) eps plus the KL's own terms.
/// Objective: scale * sum KL(enc, z(enc)) + sum z(enc) * r, with eps fixed.
#[test]
fn kl_mc_gradient() {
    let (batch, latent) = (3, 4);
    let enc = rand_vec(batch * 2 * latent, 20, 1.0);
    let eps = rand_vec(batch * latent, 21, 1.5);
    let r = rand_vec(batch * latent, 22, 1.0);
    let scale = 1.0 / batch as f32;
    let z = reparameterize(&enc, &eps, latent);
    let d = kl_mc_backward(&r, &enc, &eps, &z, latent, scale);
    let f = |e: &[f32]| {
        let z = reparameterize(e, &eps, latent);
        kl_mc_forward(e, &z, latent).iter().map(|&v| v as f64 * scale as f64).sum::<f64>() + dot(&z, &r)
    };
    gradcheck("kl_mc (with reparameterize)", &f, &enc, &d, 1e-3, 1, 2e-3, 1e-2);
}

#[test]
fn kl_analytic_gradient() {
    let (batch, latent) = (3, 5);
    let enc = rand_vec(batch * 2 * latent, 23, 1.0);
    let eps = rand_vec(batch * latent, 24, 1.5);
    let r = rand_vec(batch * latent, 25, 1.0);
    let (scale, kl_scale) = (0.5, 0.7);
    let d = kl_analytic_backward(&r, &enc, &eps, latent, kl_scale, scale);
    let f = |e: &[f32]| {
        let z = reparameterize(e, &eps, latent);
        kl_analytic_forward(e, latent, kl_scale).iter().map(|&v| v as f64 * scale as f64).sum::<f64>() + dot(&z, &r)
    };
    gradcheck("kl_analytic (with reparameterize)", &f, &enc, &d, 1e-3, 1, 2e-3, 1e-2);
}

/// The MC estimate averages to the analytic KL: E_eps[log q - log p] = 0.5 sum(e^lv + m^2 - 1 - lv).
#[test]
fn kl_mc_is_unbiased_for_the_analytic_kl() {
    let latent = 3;
    let enc = vec![0.5, -1.0, 0.2, -0.3, 0.4, -1.2];
    let n = 100_000;
    let eps = cvae::rng::Rng::new(9).normals(cvae::rng::Stream::Noise, 0, n * latent);
    let encs: Vec<f32> = enc.iter().copied().cycle().take(n * 2 * latent).collect();
    let z = reparameterize(&encs, &eps, latent);
    let mc = kl_mc_forward(&encs, &z, latent).iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let exact = kl_analytic_forward(&enc, latent, 0.5)[0] as f64;
    // Per-sample standard deviation is ~1.5 here; standard error ~0.005.
    assert!((mc - exact).abs() < 0.03, "MC {mc} vs analytic {exact}");
}
