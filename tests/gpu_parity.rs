//! Every WGSL entry point against its CPU twin on real adapters: each test runs on
//! lavapipe and on SwiftShader (`name::lavapipe`, `name::swiftshader`), under the
//! Khronos validation layer. These tests fail, never skip, without them.
//!
//! Tolerances for the sums of products (conv, transposed conv, dense, bias) come
//! from `dot_bound`: the CPU op applied to absolute values gives, element by
//! element, the sum of |terms| that rounding errors scale with. Transcendental
//! ops add WGSL's accuracy for exp/log (3 + 2|x| ULP, log 2^-21 absolute near 1).

#[macro_use]
mod common;

use std::sync::OnceLock;

use common::Driver;
use common::{abs_vec, assert_within, dot_bound, rand_vec, U};
use cvae::cpu;
use cvae::gpu::kernels::{Dispatch, Kernels};
use cvae::gpu::ops::{Ops, StepUniform, Variant, Weights};
use cvae::gpu::Gpu;
use cvae::model::{ConvGeom, KlKind, Layer, Model, Padding, Preset};
use cvae::rng::{Rng, Stream};

struct Ctx {
    gpu: Gpu,
    kernels: Kernels,
}

/// One device and its pipelines per driver, shared by the tests on that driver.
fn ctx() -> &'static Ctx {
    static CTX: [OnceLock<Ctx>; 2] = [OnceLock::new(), OnceLock::new()];
    let d = common::driver();
    CTX[Driver::ALL.iter().position(|&x| x == d).expect("a known driver")].get_or_init(|| {
        let gpu = d.open();
        let kernels = Kernels::new(&gpu).unwrap_or_else(|e| panic!("building the pipelines failed: {e:#}"));
        Ctx { gpu, kernels }
    })
}

fn ops() -> Ops<'static> {
    ops_with(Variant::Portable)
}

/// Portable kernels, and the fastest that fit each shape (blocked where channels allow).
const VARIANTS: [Variant; 2] = [Variant::Portable, Variant::Auto];

fn ops_with(variant: Variant) -> Ops<'static> {
    let c = ctx();
    Ops { gpu: &c.gpu, k: &c.kernels, variant, packs: None }
}

fn run(d: Vec<Dispatch>) {
    let c = ctx();
    c.kernels.run_now(&c.gpu, &d).unwrap_or_else(|e| panic!("{e:#}"));
}

fn read(buf: &wgpu::Buffer, n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = ctx().gpu.read(buf).unwrap_or_else(|e| panic!("{e:#}"));
    v.truncate(n);
    v
}

/// Kernel and bias placed at odd offsets inside a larger buffer, as in the flat parameter buffer.
struct Packed {
    buf: Vec<f32>,
    w_off: usize,
    b_off: usize,
}

fn pack(kernel: &[f32], bias: &[f32]) -> Packed {
    // A multiple of 4, as the flat layout gives every kernel (blocked kernels read vec4s).
    let w_off = 8;
    let b_off = w_off + kernel.len() + 3;
    let mut buf = vec![f32::NAN; b_off + bias.len() + 5];
    buf[w_off..w_off + kernel.len()].copy_from_slice(kernel);
    buf[b_off..b_off + bias.len()].copy_from_slice(bias);
    Packed { buf, w_off, b_off }
}

/// A gradient buffer filled with a sentinel, so writes outside the layer's slice show.
const SENTINEL: f32 = -12345.0;

fn check_untouched(grads: &[f32], keep: std::ops::Range<usize>, what: &str) {
    for (i, &g) in grads.iter().enumerate() {
        if !keep.contains(&i) {
            assert_eq!(g, SENTINEL, "{what} wrote outside its slice at {i}");
        }
    }
}

/// Small shapes (batch 1, odd sizes, both paddings, both strides) and every
/// conv layer of both presets (at batch 2).
fn conv_cases(transpose: bool) -> Vec<ConvGeom> {
    let mut v = common::small_conv_cases(transpose);
    v.extend(common::conv_cases_from(
        transpose,
        &[
            (5, 9, 9, 3, 5, 3, 2, Padding::Valid),
            // Channel counts the blocked kernels take (multiples of 4 and 16, one input
            // channel), with batches that are not multiples of 4.
            (3, 7, 6, 4, 8, 3, 2, Padding::Same),
            (5, 9, 9, 1, 16, 3, 2, Padding::Valid),
            (2, 8, 8, 8, 4, 3, 1, Padding::Same),
            (1, 5, 5, 4, 4, 3, 2, Padding::Valid),
            (6, 6, 7, 16, 1, 3, 1, Padding::Same),
            // One to four channels on the fine side (the subgroup family's narrow input
            // gradient): rows wider than its strips of 32, kernels wider than 3 taps.
            (2, 3, 37, 8, 1, 5, 1, Padding::Same),
            (2, 6, 37, 1, 8, 5, 1, Padding::Valid),
            (1, 4, 35, 2, 4, 5, 2, Padding::Same),
            // One fine-side channel (the subgroup family's _thin kernels): blocks of
            // 4 x 4 pixels cut by odd sides, 36 channels (a second, partial block of
            // 32), a 2 x 2 kernel, both strides and paddings; the last is the
            // Conv2DTranspose form (36 channels in, one out, by phases).
            (1, 7, 9, 1, 36, 3, 2, Padding::Same),
            (3, 5, 6, 1, 4, 2, 1, Padding::Valid),
            (2, 10, 11, 1, 8, 3, 1, Padding::Same),
            (1, 4, 5, 36, 1, 3, 2, Padding::Same),
        ],
    ));
    for preset in [Preset::TfCvae, Preset::KerasVae] {
        let m = Model::preset(preset, preset.default_latent(), preset.default_kl()).unwrap();
        for l in m.layers() {
            let is_t = matches!(l.layer, Layer::Conv2DTranspose { .. });
            if let (Some(g), true) = (l.conv_geom(2), is_t == transpose) {
                if matches!(l.layer, Layer::Conv2D { .. } | Layer::Conv2DTranspose { .. }) {
                    v.push(g);
                }
            }
        }
    }
    v
}

/// Reduction lengths: forward sums k*k*in_c (+ bias), input gradient ceil(k/s)^2*out_c, kernel gradient batch*out_h*out_w.
fn conv_test(transpose: bool) {
    for variant in VARIANTS {
        conv_test_cases(transpose, variant, &conv_cases(transpose));
    }
}

fn conv_test_cases(transpose: bool, variant: Variant, cases: &[ConvGeom]) {
    let o = ops_with(variant);
    let gpu = &ctx().gpu;
    let name = if transpose { "conv2d_transpose" } else { "conv2d" };
    let (mut worst_f, mut worst_i, mut worst_k) = ((0.0f64, 0.0f64), (0.0f64, 0.0f64), (0.0f64, 0.0f64));
    for (n, &g) in cases.iter().enumerate() {
        let x = rand_vec(g.in_len(), 40 + n as u32, 1.0);
        let kernel = rand_vec(g.kernel_len(), 60 + n as u32, 0.5);
        let bias = rand_vec(g.out_c, 80 + n as u32, 0.5);
        let dy = rand_vec(g.out_len(), 100 + n as u32, 1.0);
        let relu = n % 2 == 0;
        let p = pack(&kernel, &bias);
        let (xb, pb, yb, dyb, dxb) = (
            gpu.upload("x", &x),
            gpu.upload("params", &p.buf),
            gpu.zeros("y", g.out_len()),
            gpu.upload("dy", &dy),
            gpu.zeros("dx", g.in_len()),
        );
        let gb = gpu.upload("grads", &vec![SENTINEL; p.buf.len()]);
        let w = Weights { params: &pb, w_off: p.w_off, b_off: p.b_off };
        let gw = Weights { params: &gb, w_off: p.w_off, b_off: p.b_off };
        let act = if relu { cvae::model::Activation::Relu } else { cvae::model::Activation::Linear };
        let lin = cvae::model::Activation::Linear;
        let (d, y_ref, y_mag, dx_ref, dx_mag, dk_ref, dk_mag) = if transpose {
            (
                vec![
                    o.conv2d_transpose_forward(&g, &xb, w, relu, &yb).unwrap(),
                    o.conv2d_transpose_backward_input(&g, &dyb, w, &dxb).unwrap(),
                    o.conv2d_transpose_backward_kernel(&g, &xb, &dyb, gw).unwrap(),
                ],
                cpu::conv2d_transpose::conv2d_transpose_forward(&g, &x, &kernel, &bias, act),
                cpu::conv2d_transpose::conv2d_transpose_forward(&g, &abs_vec(&x), &abs_vec(&kernel), &abs_vec(&bias), lin),
                cpu::conv2d_transpose::conv2d_transpose_backward_input(&g, &dy, &kernel),
                cpu::conv2d_transpose::conv2d_transpose_backward_input(&g, &abs_vec(&dy), &abs_vec(&kernel)),
                cpu::conv2d_transpose::conv2d_transpose_backward_kernel(&g, &x, &dy),
                cpu::conv2d_transpose::conv2d_transpose_backward_kernel(&g, &abs_vec(&x), &abs_vec(&dy)),
            )
        } else {
            (
                vec![
                    o.conv2d_forward(&g, &xb, w, relu, &yb).unwrap(),
                    o.conv2d_backward_input(&g, &dyb, w, &dxb).unwrap(),
                    o.conv2d_backward_kernel(&g, &xb, &dyb, gw).unwrap(),
                ],
                cpu::conv2d::conv2d_forward(&g, &x, &kernel, &bias, act),
                cpu::conv2d::conv2d_forward(&g, &abs_vec(&x), &abs_vec(&kernel), &abs_vec(&bias), lin),
                cpu::conv2d::conv2d_backward_input(&g, &dy, &kernel),
                cpu::conv2d::conv2d_backward_input(&g, &abs_vec(&dy), &abs_vec(&kernel)),
                cpu::conv2d::conv2d_backward_kernel(&g, &x, &dy),
                cpu::conv2d::conv2d_backward_kernel(&g, &abs_vec(&x), &abs_vec(&dy)),
            )
        };
        run(d);
        let k_fwd = g.k_h * g.k_w * g.in_c + 1;
        let k_in = g.k_h.div_ceil(g.stride) * g.k_w.div_ceil(g.stride) * g.out_c;
        let k_ker = g.batch * g.in_h.max(g.out_h) * g.in_w.max(g.out_w);
        let e = assert_within(&format!("{name}_forward ({variant:?}) {g:?}"), &read(&yb, g.out_len()), &y_ref, &dot_bound(k_fwd, &y_mag));
        worst_f = (worst_f.0.max(e.0), worst_f.1.max(e.1));
        let e = assert_within(
            &format!("{name}_backward_input ({variant:?}) {g:?}"),
            &read(&dxb, g.in_len()),
            &dx_ref,
            &dot_bound(k_in, &dx_mag),
        );
        worst_i = (worst_i.0.max(e.0), worst_i.1.max(e.1));
        let grads = read(&gb, p.buf.len());
        let e = assert_within(
            &format!("{name}_backward_kernel ({variant:?}) {g:?}"),
            &grads[p.w_off..p.w_off + g.kernel_len()],
            &dk_ref,
            &dot_bound(k_ker, &dk_mag),
        );
        worst_k = (worst_k.0.max(e.0), worst_k.1.max(e.1));
        check_untouched(&grads, p.w_off..p.w_off + g.kernel_len(), &format!("{name}_backward_kernel"));
    }
    eprintln!("PARITY [{}] {name}_forward ({variant:?}) max abs {:.2e} max rel {:.2e}", common::driver().name(), worst_f.0, worst_f.1);
    eprintln!(
        "PARITY [{}] {name}_backward_input ({variant:?}) max abs {:.2e} max rel {:.2e}",
        common::driver().name(),
        worst_i.0,
        worst_i.1
    );
    eprintln!(
        "PARITY [{}] {name}_backward_kernel ({variant:?}) max abs {:.2e} max rel {:.2e}",
        common::driver().name(),
        worst_k.0,
        worst_k.1
    );
}

fn conv2d_forward_backward_input_backward_kernel() {
    conv_test(false);
}

fn conv2d_transpose_forward_backward_input_backward_kernel() {
    conv_test(true);
}

/// The tf-cvae decoder's largest layers at the real batch of 100: a kernel gradient
/// sums 78,400 products, past llvmpipe's budget of 65,535 loop iterations per
/// invocation, so this catches a kernel that does not split its batch.
fn conv2d_transpose_at_batch_100() {
    let m = Model::preset(Preset::TfCvae, 50, KlKind::Mc).unwrap();
    let cases: Vec<ConvGeom> = m.decoder.iter().filter_map(|l| l.conv_geom(100)).filter(|g| g.out_h == 28).collect();
    assert_eq!(cases.len(), 2);
    for variant in VARIANTS {
        conv_test_cases(true, variant, &cases);
    }
}

/// Every layer op (Conv2D, Conv2DTranspose, Dense; forward, input and kernel gradient)
/// through one family forced, over the same shapes as above: batch 1, odd sizes, both
/// paddings and strides, every layer of both presets, and the largest at batch 100.
fn family_test(variant: Variant) {
    let m = Model::preset(Preset::TfCvae, 50, KlKind::Mc).unwrap();
    let big: Vec<ConvGeom> = m.decoder.iter().filter_map(|l| l.conv_geom(100)).filter(|g| g.out_h == 28).collect();
    conv_test_cases(false, variant, &conv_cases(false));
    conv_test_cases(true, variant, &conv_cases(true));
    conv_test_cases(true, variant, &big);
    dense_cases(variant);
}

/// Whether the adapter offers the subgroup family; where not, says so (the plan never
/// picks it there, so there is nothing of it to hold to the CPU).
fn subgroup_offered() -> bool {
    let c = ctx();
    let offered = cvae::gpu::plan::offered(&c.gpu).contains(&Variant::Subgroup);
    if !offered {
        eprintln!("NOTE: {} has no 8-lane subgroups; the subgroup family is not offered on it, and not tested", c.gpu.name());
    }
    offered
}

/// The subgroup family, where the adapter offers it (8-lane subgroups: lavapipe on a
/// 256-bit host, as in CI). Elsewhere the plan never picks it, so there is nothing of
/// it to hold to the CPU: the test says so and checks that it is not offered.
fn every_layer_op_through_the_subgroup_family() {
    if !subgroup_offered() {
        return;
    }
    family_test(Variant::Subgroup);
}

fn every_layer_op_through_the_tiled_family() {
    family_test(Variant::Tiled);
}

/// Dense shapes: batch 1 and odd, and every Dense of both presets.
fn dense_forward_backward_input_backward_kernel() {
    for variant in VARIANTS {
        dense_cases(variant);
    }
}

fn dense_cases(variant: Variant) {
    let o = ops_with(variant);
    let gpu = &ctx().gpu;
    let mut worst = [(0.0f64, 0.0f64); 3];
    let cases = [
        (1, 5, 3),
        (3, 7, 4),
        (7, 33, 65),
        (3, 2304, 100),
        (2, 50, 1568),
        (2, 12544, 32),
        (5, 32, 4),
        (4, 2, 12544),
        (5, 8, 16),
        (100, 2304, 100),
    ];
    for (n, &(batch, inputs, outputs)) in cases.iter().enumerate() {
        let x = rand_vec(batch * inputs, 120 + n as u32, 1.0);
        let kernel = rand_vec(inputs * outputs, 140 + n as u32, 0.5);
        let bias = rand_vec(outputs, 160 + n as u32, 0.5);
        let dy = rand_vec(batch * outputs, 180 + n as u32, 1.0);
        let relu = n % 2 == 1;
        let p = pack(&kernel, &bias);
        let (xb, pb, yb, dyb, dxb) = (
            gpu.upload("x", &x),
            gpu.upload("params", &p.buf),
            gpu.zeros("y", batch * outputs),
            gpu.upload("dy", &dy),
            gpu.zeros("dx", batch * inputs),
        );
        let gb = gpu.upload("grads", &vec![SENTINEL; p.buf.len()]);
        let w = Weights { params: &pb, w_off: p.w_off, b_off: p.b_off };
        let gw = Weights { params: &gb, w_off: p.w_off, b_off: p.b_off };
        run(vec![
            o.dense_forward(batch, inputs, outputs, &xb, w, relu, &yb).unwrap(),
            o.dense_backward_input(batch, inputs, outputs, &dyb, w, &dxb).unwrap(),
            o.dense_backward_kernel(batch, inputs, outputs, &xb, &dyb, gw).unwrap(),
        ]);
        let act = if relu { cvae::model::Activation::Relu } else { cvae::model::Activation::Linear };
        let lin = cvae::model::Activation::Linear;
        let what = format!("({variant:?}) batch {batch}, {inputs} -> {outputs}");
        let y_ref = cpu::dense::dense_forward(&x, &kernel, &bias, inputs, act);
        let y_mag = cpu::dense::dense_forward(&abs_vec(&x), &abs_vec(&kernel), &abs_vec(&bias), inputs, lin);
        let e0 = assert_within(&format!("dense_forward {what}"), &read(&yb, batch * outputs), &y_ref, &dot_bound(inputs + 1, &y_mag));
        let dx_ref = cpu::dense::dense_backward_input(&dy, &kernel, inputs, outputs);
        let dx_mag = cpu::dense::dense_backward_input(&abs_vec(&dy), &abs_vec(&kernel), inputs, outputs);
        let e1 = assert_within(&format!("dense_backward_input {what}"), &read(&dxb, batch * inputs), &dx_ref, &dot_bound(outputs, &dx_mag));
        let dk_ref = cpu::dense::dense_backward_kernel(&x, &dy, inputs, outputs);
        let dk_mag = cpu::dense::dense_backward_kernel(&abs_vec(&x), &abs_vec(&dy), inputs, outputs);
        let grads = read(&gb, p.buf.len());
        let e2 = assert_within(
            &format!("dense_backward_kernel {what}"),
            &grads[p.w_off..p.w_off + kernel.len()],
            &dk_ref,
            &dot_bound(batch, &dk_mag),
        );
        check_untouched(&grads, p.w_off..p.w_off + kernel.len(), "dense_backward_kernel");
        for (w, e) in worst.iter_mut().zip([e0, e1, e2]) {
            *w = (w.0.max(e.0), w.1.max(e.1));
        }
    }
    for (name, w) in ["dense_forward", "dense_backward_input", "dense_backward_kernel"].iter().zip(worst) {
        eprintln!("PARITY [{}] {name} ({variant:?}) max abs {:.2e} max rel {:.2e}", common::driver().name(), w.0, w.1);
    }
}

/// relu_backward is exact (a select); bias_backward sums `rows` values (fewer than 64
/// rows: bias_backward_columns; 64 and more: the tree).
fn relu_backward_and_bias_backward() {
    let o = ops();
    let gpu = &ctx().gpu;
    for &(rows, channels) in &[(1, 1), (7, 3), (100 * 28 * 28, 32), (100, 1568), (3, 12544), (16, 3136), (63, 5), (64, 8)] {
        let y: Vec<f32> = rand_vec(rows * channels, 200, 1.0).iter().map(|v| v.max(0.0)).collect();
        let dy = rand_vec(rows * channels, 201, 1.0);
        let (yb, dyb) = (gpu.upload("y", &y), gpu.upload("dy", &dy));
        let gb = gpu.upload("grads", &vec![SENTINEL; channels + 9]);
        run(vec![o.bias_backward(rows, channels, &dyb, &gb, 4).unwrap()]);
        run(vec![o.relu_backward(rows * channels, &yb, &dyb).unwrap()]);
        let db_ref = cpu::bias_backward(&dy, channels);
        let db_mag = cpu::bias_backward(&abs_vec(&dy), channels);
        let grads = read(&gb, channels + 9);
        let e = assert_within(
            &format!("bias_backward rows {rows} channels {channels}"),
            &grads[4..4 + channels],
            &db_ref,
            &dot_bound(rows, &db_mag),
        );
        check_untouched(&grads, 4..4 + channels, "bias_backward");
        let got = read(&dyb, rows * channels);
        assert_eq!(got, cpu::relu_backward(&dy, &y), "relu_backward rows {rows} channels {channels}");
        eprintln!(
            "PARITY [{}] bias_backward ({rows}x{channels}) max abs {:.2e} max rel {:.2e}; relu_backward exact",
            common::driver().name(),
            e.0,
            e.1
        );
    }
}

/// The subgroup family's ReLU backward (relu_mask_rows): dy masked in place and copied
/// into the texture the layer's gradient kernels read, the bias gradient from partial
/// sums over blocks of 64 rows. A Dense kernel gradient through the same `Packs` reads
/// the texture. Bias: `rows` values summed; kernel gradient: `rows` products.
fn relu_bias_backward_subgroup_masks_packs_and_sums() {
    if !subgroup_offered() {
        return;
    }
    let gpu = &ctx().gpu;
    for &(rows, channels) in &[(1, 4), (65, 8), (100 * 28 * 28, 32), (100, 1568), (3, 12544)] {
        let inputs = 5;
        let y: Vec<f32> = rand_vec(rows * channels, 210, 1.0).iter().map(|v| v.max(0.0)).collect();
        let dy = rand_vec(rows * channels, 211, 1.0);
        let x = rand_vec(rows * inputs, 212, 1.0);
        let (yb, dyb, xb) = (gpu.upload("y", &y), gpu.upload("dy", &dy), gpu.upload("x", &x));
        let p = pack(&vec![0.0; inputs * channels], &vec![0.0; channels]);
        let gb = gpu.upload("grads", &vec![SENTINEL; p.buf.len()]);
        let packs = cvae::gpu::ops::Packs::default();
        let o = Ops { packs: Some(&packs), ..ops_with(Variant::Subgroup) };
        let fused = o.relu_bias_backward_subgroup(rows, channels, &yb, &dyb, &gb, p.b_off).unwrap();
        let gw = Weights { params: &gb, w_off: p.w_off, b_off: p.b_off };
        run(vec![
            fused.expect("channels in fours take the fused pass"),
            o.dense_backward_kernel(rows, inputs, channels, &xb, &dyb, gw).unwrap(),
        ]);
        let masked = cpu::relu_backward(&dy, &y);
        let what = format!("relu_mask_rows rows {rows} channels {channels}");
        let grads = read(&gb, p.buf.len());
        let (db_ref, db_mag) = (cpu::bias_backward(&masked, channels), cpu::bias_backward(&abs_vec(&masked), channels));
        let eb = assert_within(&format!("{what}: bias"), &grads[p.b_off..p.b_off + channels], &db_ref, &dot_bound(rows, &db_mag));
        let dk_ref = cpu::dense::dense_backward_kernel(&x, &masked, inputs, channels);
        let dk_mag = cpu::dense::dense_backward_kernel(&abs_vec(&x), &abs_vec(&masked), inputs, channels);
        let ek = assert_within(
            &format!("{what}: kernel gradient"),
            &grads[p.w_off..p.w_off + inputs * channels],
            &dk_ref,
            &dot_bound(rows, &dk_mag),
        );
        assert_eq!(read(&dyb, rows * channels), masked, "{what}: dy's buffer must hold the masked dy");
        eprintln!(
            "PARITY [{}] {what}: bias max abs {:.2e} rel {:.2e}; kernel max abs {:.2e} rel {:.2e}",
            common::driver().name(),
            eb.0,
            eb.1,
            ek.0,
            ek.1
        );
    }
}

fn step_buffer(step: StepUniform) -> wgpu::Buffer {
    ctx().gpu.uniform("step", &step)
}

/// Cross-entropy: each term carries exp and log errors of a few ULP and, near log(1),
/// 2^-21 absolute; summed over `pixels` terms plus the summation's sqrt(pixels) u |sum|.
fn sigmoid_cross_entropy_forward_backward_and_loss_reduce() {
    let o = ops();
    let gpu = &ctx().gpu;
    for &(batch, pixels) in &[(1, 784), (3, 10), (100, 784), (17, 65)] {
        let logits = rand_vec(batch * pixels, 210, 6.0);
        let targets: Vec<f32> = rand_vec(batch * pixels, 211, 1.0).iter().map(|&v| if v > 0.3 { 1.0 } else { 0.0 }).collect();
        let kl = rand_vec(batch, 212, 3.0);
        let recon_scale = 0.7;
        let (lb, tb, klb) = (gpu.upload("logits", &logits), gpu.upload("targets", &targets), gpu.upload("kl", &kl));
        let (ceb, db, lossb) = (gpu.zeros("ce", batch), gpu.zeros("dlogits", batch * pixels), gpu.zeros("losses", 4));
        let sb = step_buffer(StepUniform { loss_slot: 2, ..Default::default() });
        run(vec![
            o.sigmoid_cross_entropy_forward(batch, pixels, &lb, &tb, &ceb).unwrap(),
            o.sigmoid_cross_entropy_backward(batch, pixels, recon_scale, &lb, &tb, &db).unwrap(),
            o.loss_reduce(batch, recon_scale, &ceb, &klb, &lossb, &sb).unwrap(),
        ]);
        let ce_ref = cpu::loss::sigmoid_cross_entropy_forward(&logits, &targets, pixels);
        let bound: Vec<f64> = ce_ref
            .iter()
            .map(|&c| pixels as f64 * (2f64.powi(-21) + 16.0 * U * 7.0) + 8.0 * (pixels as f64).sqrt() * U * c as f64)
            .collect();
        let e = assert_within(&format!("sigmoid_cross_entropy_forward batch {batch} pixels {pixels}"), &read(&ceb, batch), &ce_ref, &bound);
        eprintln!("PARITY [{}] sigmoid_cross_entropy_forward max abs {:.2e} max rel {:.2e}", common::driver().name(), e.0, e.1);
        let d_ref = cpu::loss::sigmoid_cross_entropy_backward(&logits, &targets, recon_scale / batch as f32);
        // sigmoid through exp: a few ULP of the result, plus the rounding of the scale.
        let bound: Vec<f64> = d_ref.iter().map(|&d| 32.0 * U * (d.abs() as f64 + (recon_scale / batch as f32) as f64)).collect();
        let e = assert_within(
            &format!("sigmoid_cross_entropy_backward batch {batch} pixels {pixels}"),
            &read(&db, batch * pixels),
            &d_ref,
            &bound,
        );
        eprintln!("PARITY [{}] sigmoid_cross_entropy_backward max abs {:.2e} max rel {:.2e}", common::driver().name(), e.0, e.1);
        // loss_reduce from the GPU's own ce, so only the reduction is compared.
        let ce_gpu = read(&ceb, batch);
        let loss_ref = cpu::loss::loss_reduce(&ce_gpu, &kl, recon_scale);
        let mag = cpu::loss::loss_reduce(&abs_vec(&ce_gpu), &abs_vec(&kl), recon_scale);
        let got = read(&lossb, 4);
        assert_eq!((got[0], got[1], got[3]), (0.0, 0.0, 0.0), "loss_reduce wrote outside its slot");
        let e = assert_within("loss_reduce", &got[2..3], &[loss_ref], &dot_bound(2 * batch, &[mag]));
        eprintln!("PARITY [{}] loss_reduce max abs {:.2e} max rel {:.2e}", common::driver().name(), e.0, e.1);
    }
}

/// KL terms: exp of |lv| <= 2 errs by up to 3 + 2|x| ULP = 7 ULP; each output sums
/// `latent` such terms (forward) or combines a handful (backward).
fn kl_mc_and_analytic_forward_backward() {
    let o = ops();
    let gpu = &ctx().gpu;
    for &(batch, latent) in &[(1, 1), (3, 2), (100, 50), (16, 2), (7, 13)] {
        let enc = rand_vec(batch * 2 * latent, 220, 2.0);
        let eps = Rng::new(3).normals(Stream::Noise, 0, batch * latent);
        let z = cpu::reparam::reparameterize(&enc, &eps, latent);
        let dz = rand_vec(batch * latent, 221, 1.0);
        let (scale, kl_scale) = (1.0 / batch as f32, 5e-4 / latent as f32);
        let (eb, zb, epsb, dzb) = (gpu.upload("enc", &enc), gpu.upload("z", &z), gpu.upload("eps", &eps), gpu.upload("dz", &dz));
        let (kmc, kan, dmc, dan) = (
            gpu.zeros("kl_mc", batch),
            gpu.zeros("kl_an", batch),
            gpu.zeros("d_mc", batch * 2 * latent),
            gpu.zeros("d_an", batch * 2 * latent),
        );
        run(vec![
            o.kl_mc_forward(batch, latent, &eb, &zb, &kmc).unwrap(),
            o.kl_mc_backward(batch, latent, scale, &dzb, &eb, &epsb, &zb, &dmc).unwrap(),
            o.kl_analytic_forward(batch, latent, kl_scale, &eb, &kan).unwrap(),
            o.kl_analytic_backward(batch, latent, kl_scale, scale, &dzb, &eb, &epsb, &dan).unwrap(),
        ]);
        // Each term of the MC estimate is O(z^2 e^-lv) <= ~100 here; the two sums are
        // subtracted, so the bound scales with the sum of |terms|, not with the result.
        let mc_ref = cpu::kl::kl_mc_forward(&enc, &z, latent);
        let mc_mag: Vec<f32> = (0..batch)
            .map(|b| {
                (0..latent)
                    .map(|l| {
                        let (m, lv) = cpu::reparam::mean_logvar(&enc, latent, b, l);
                        let zv = z[b * latent + l];
                        0.5 * ((zv - m).powi(2) * (-lv).exp() + lv.abs() + cpu::kl::LOG_2PI) + 0.5 * (zv * zv + cpu::kl::LOG_2PI)
                    })
                    .sum()
            })
            .collect();
        let bound: Vec<f64> = mc_mag.iter().map(|&m| 32.0 * (latent as f64).sqrt() * U * m as f64 + 1e-30).collect();
        let e = assert_within(&format!("kl_mc_forward batch {batch} latent {latent}"), &read(&kmc, batch), &mc_ref, &bound);
        eprintln!("PARITY [{}] kl_mc_forward max abs {:.2e} max rel {:.2e}", common::driver().name(), e.0, e.1);
        let an_ref = cpu::kl::kl_analytic_forward(&enc, latent, kl_scale);
        let an_mag: Vec<f32> = enc
            .chunks(2 * latent)
            .map(|r| kl_scale * (0..latent).map(|l| r[latent + l].exp() + r[l] * r[l] + 1.0 + r[latent + l].abs()).sum::<f32>())
            .collect();
        let bound: Vec<f64> = an_mag.iter().map(|&m| 32.0 * (latent as f64).sqrt() * U * m as f64).collect();
        let e = assert_within(&format!("kl_analytic_forward batch {batch} latent {latent}"), &read(&kan, batch), &an_ref, &bound);
        eprintln!("PARITY [{}] kl_analytic_forward max abs {:.2e} max rel {:.2e}", common::driver().name(), e.0, e.1);
        // Backward: a few products of exp() results and inputs of size <= ~10; 32 ULP of the
        // largest term. The largest term is bounded by |dz| e^|lv| |eps| + scale (z-m)^2 e^-lv.
        for (name, got, want) in [
            ("kl_mc_backward", read(&dmc, batch * 2 * latent), cpu::kl::kl_mc_backward(&dz, &enc, &eps, &z, latent, scale)),
            (
                "kl_analytic_backward",
                read(&dan, batch * 2 * latent),
                cpu::kl::kl_analytic_backward(&dz, &enc, &eps, latent, kl_scale, scale),
            ),
        ] {
            let bound: Vec<f64> = (0..want.len())
                .map(|i| {
                    let (b, l) = (i / (2 * latent), (i % (2 * latent)) % latent);
                    let (m, lv) = cpu::reparam::mean_logvar(&enc, latent, b, l);
                    let j = b * latent + l;
                    let big =
                        (dz[j].abs() + 1.0) * (lv.abs().exp()) * (eps[j].abs() + 1.0) + (z[j] - m).powi(2) * (-lv).exp() + m.abs() + 1.0;
                    32.0 * U * big as f64
                })
                .collect();
            let e = assert_within(&format!("{name} batch {batch} latent {latent}"), &got, &want, &bound);
            eprintln!("PARITY [{}] {name} max abs {:.2e} max rel {:.2e}", common::driver().name(), e.0, e.1);
        }
    }
}

/// The shader's RNG stream equals the CPU's: integers exactly, normals within
/// `normal_bound` (arithmetic only, so a few ULP on any adapter).
fn rng_stream_and_reparameterize_match_the_cpu() {
    let o = ops();
    let gpu = &ctx().gpu;
    for (seed, stream, step) in
        [(0u64, Stream::Noise, 0u32), (42, Stream::Noise, 12345), (u64::MAX - 3, Stream::EvalNoise, 7), (7, Stream::Samples, 0)]
    {
        let rng = Rng::new(seed);
        let n = 5000;
        let sb = step_buffer(StepUniform { step, ..Default::default() });
        let (bits, normals) = (gpu.zeros("bits", 4 * n), gpu.zeros("normals", n));
        run(vec![o.rng_stream(n, rng.key(stream), &sb, &bits, &normals).unwrap()]);
        let mut got_bits: Vec<u32> = gpu.read(&bits).unwrap();
        got_bits.truncate(4 * n);
        let want_bits: Vec<u32> = (0..n as u32).flat_map(|i| rng.bits(stream, step, i)).collect();
        assert_eq!(got_bits, want_bits, "pcg4d bits differ (seed {seed}, {stream:?}, step {step})");
        let want = rng.normals(stream, step, n);
        let bound: Vec<f64> = want.iter().map(|&z| common::normal_bound(z)).collect();
        let e = assert_within(&format!("rng normals seed {seed}"), &read(&normals, n), &want, &bound);
        eprintln!("PARITY [{}] rng_stream bits exact; normals max abs {:.2e} max rel {:.2e}", common::driver().name(), e.0, e.1);
    }
    // reparameterize draws the same eps and forms z = m + e^(lv/2) eps.
    let (batch, latent, seed, step) = (9, 50, 11u64, 31u32);
    let enc = rand_vec(batch * 2 * latent, 230, 2.0);
    let rng = Rng::new(seed);
    let (eb, zb, epsb) = (gpu.upload("enc", &enc), gpu.zeros("z", batch * latent), gpu.zeros("eps", batch * latent));
    let sb = step_buffer(StepUniform { step, ..Default::default() });
    run(vec![o.reparameterize(batch, latent, rng.key(Stream::Noise), &eb, &sb, &zb, &epsb, false).unwrap()]);
    let eps_ref = rng.normals(Stream::Noise, step, batch * latent);
    let z_ref = cpu::reparam::reparameterize(&enc, &eps_ref, latent);
    let bound: Vec<f64> = eps_ref.iter().map(|&z| common::normal_bound(z)).collect();
    assert_within("reparameterize eps", &read(&epsb, batch * latent), &eps_ref, &bound);
    let bound: Vec<f64> = (0..batch * latent)
        .map(|i| {
            let (m, lv) = cpu::reparam::mean_logvar(&enc, latent, i / latent, i % latent);
            let s = (0.5 * lv).exp() as f64;
            8.0 * U * (m.abs() as f64 + s * eps_ref[i].abs() as f64) + s * common::normal_bound(eps_ref[i])
        })
        .collect();
    let e = assert_within("reparameterize z", &read(&zb, batch * latent), &z_ref, &bound);
    eprintln!("PARITY [{}] reparameterize max abs {:.2e} max rel {:.2e}", common::driver().name(), e.0, e.1);
    // cvae eval's noise: indexed by the image's place (batch_start + row), not the row.
    let first = 4321;
    let sb = step_buffer(StepUniform { step, batch_start: first as u32, ..Default::default() });
    run(vec![o.reparameterize(batch, latent, rng.key(Stream::Importance), &eb, &sb, &zb, &epsb, true).unwrap()]);
    let eps_ref = rng.image_normals(Stream::Importance, step, first, batch, latent);
    let bound: Vec<f64> = eps_ref.iter().map(|&z| common::normal_bound(z)).collect();
    let e = assert_within("reparameterize eps by image", &read(&epsb, batch * latent), &eps_ref, &bound);
    eprintln!("PARITY [{}] reparameterize by image max abs {:.2e} max rel {:.2e}", common::driver().name(), e.0, e.1);
}

/// Several optimizer steps on the GPU equal the CPU's; each step is a handful of
/// rounded operations per element, so after `steps` the difference stays within
/// ~16 ULP per step of the parameter's size plus the step's.
fn adam_update_and_rmsprop_update_over_several_steps() {
    let o = ops();
    let gpu = &ctx().gpu;
    let n = 1000;
    let steps = 5;
    for opt in [Preset::TfCvae.default_optimizer().with_lr(1e-2), Preset::KerasVae.default_optimizer()] {
        let mut params = rand_vec(n, 240, 1.0);
        let mut state = cpu::vae::OptState::new(&opt, n);
        let pb = gpu.upload("params", &params);
        let (gb, mb, vb) = (gpu.zeros("grads", n), gpu.zeros("m", n), gpu.zeros("v", n));
        let sb = step_buffer(StepUniform::default());
        for s in 0..steps {
            let grads = rand_vec(n, 250 + s, 1.0);
            gpu.queue.write_buffer(&gb, 0, bytemuck::cast_slice(&grads));
            let d = match opt {
                cvae::model::Optimizer::Adam { lr, beta1, beta2, eps } => {
                    let alpha = cpu::optim::adam_alpha(lr, beta1, beta2, state.step + 1);
                    gpu.queue.write_buffer(&sb, 0, bytemuck::bytes_of(&StepUniform { alpha, ..Default::default() }));
                    o.adam_update(n, beta1, beta2, eps, &pb, &gb, &mb, &vb, &sb).unwrap()
                }
                cvae::model::Optimizer::RmsProp { lr, rho, eps } => o.rmsprop_update(n, lr, rho, eps, &pb, &gb, &vb).unwrap(),
            };
            run(vec![d]);
            cpu::vae::optimizer_step(&opt, &mut params, &grads, &mut state);
        }
        let lr = opt.lr() as f64;
        let bound: Vec<f64> = params.iter().map(|&p| steps as f64 * 16.0 * U * (p.abs() as f64 + 10.0 * lr)).collect();
        let e = assert_within(&format!("{opt:?} after {steps} steps"), &read(&pb, n), &params, &bound);
        let name = if matches!(opt, cvae::model::Optimizer::Adam { .. }) { "adam_update" } else { "rmsprop_update" };
        eprintln!("PARITY [{}] {name} ({steps} steps) max abs {:.2e} max rel {:.2e}", common::driver().name(), e.0, e.1);
    }
}

/// Gathering from the packed bytes: binarized values are exact; grayscale is one
/// division by 255 (WGSL: 2.5 ULP).
fn gather_images_matches_the_cpu() {
    let o = ops();
    let gpu = &ctx().gpu;
    let data = cvae::data::Dataset::embedded().unwrap();
    let mut train = data.train.clone();
    train.truncate(1001);
    let pixels = train.pixels();
    let order = Rng::new(5).permutation(0, train.len());
    let images = gpu.upload_bytes("images", &train.images);
    let ob = gpu.upload("order", &order);
    for (binarize, batch, start) in [(true, 100, 0), (false, 7, 993), (true, 1, 500)] {
        let xb = gpu.zeros("x", batch * pixels);
        let sb = step_buffer(StepUniform { batch_start: start as u32, ..Default::default() });
        run(vec![o.gather_images(batch, pixels, binarize, &images, &ob, &sb, &xb).unwrap()]);
        let want = cpu::gather::gather_images(&train.images, &order, start, batch, pixels, binarize);
        let got = read(&xb, batch * pixels);
        if binarize {
            assert_eq!(got, want, "gather_images (binarized) batch {batch} from {start}");
        } else {
            let bound: Vec<f64> = want.iter().map(|&w| 3.0 * U * w as f64).collect();
            assert_within("gather_images (grayscale)", &got, &want, &bound);
        }
    }
    eprintln!("PARITY [{}] gather_images binarized exact, grayscale within 3 ULP", common::driver().name());
}

fn every_entry_point_has_a_pipeline() {
    let c = ctx();
    let mut names: Vec<&str> = c.kernels.entry_points().collect();
    names.sort();
    eprintln!("entry points: {}", names.join(", "));
    assert!(names.len() >= 20);
    // Pipelines are built before first use; build every one here.
    c.kernels.build(&c.gpu, &names).unwrap();
    let _ = KlKind::Mc;
}

/// Buffers are bound by the names the shader gives them: a name the entry point does
/// not bind, a binding left unnamed, or a uniform of another struct is an error that
/// names the entry point, not a silently swapped buffer.
fn bindings_are_checked_by_name() {
    let c = ctx();
    let b = c.gpu.zeros("b", 64);
    let u = cvae::gpu::uniforms::ActUniform { rows: 4, channels: 1, ..Default::default() };
    let ok = c.kernels.dispatch(&c.gpu, "relu_backward", &u, &[("y4", &b), ("dy4", &b)], 4);
    assert!(ok.is_ok(), "{:#}", ok.err().unwrap());
    let e = c.kernels.dispatch(&c.gpu, "relu_backward", &u, &[("y4", &b), ("dx", &b)], 4).err().expect("unknown name");
    assert!(format!("{e:#}").contains("relu_backward") && format!("{e:#}").contains("no binding named dx"), "{e:#}");
    let e = c.kernels.dispatch(&c.gpu, "relu_backward", &u, &[("y4", &b)], 4).err().expect("missing name");
    assert!(format!("{e:#}").contains("needs a binding named dy4"), "{e:#}");
    let wrong = cvae::gpu::uniforms::DenseUniform::default();
    let e = c.kernels.dispatch(&c.gpu, "relu_backward", &wrong, &[("y4", &b), ("dy4", &b)], 4).err().expect("wrong uniform");
    assert!(format!("{e:#}").contains("takes a uniform Act, not Dense"), "{e:#}");
}

on_every_driver!(
    conv2d_forward_backward_input_backward_kernel,
    conv2d_transpose_forward_backward_input_backward_kernel,
    conv2d_transpose_at_batch_100,
    every_layer_op_through_the_subgroup_family,
    every_layer_op_through_the_tiled_family,
    dense_forward_backward_input_backward_kernel,
    relu_backward_and_bias_backward,
    relu_bias_backward_subgroup_masks_packs_and_sums,
    sigmoid_cross_entropy_forward_backward_and_loss_reduce,
    kl_mc_and_analytic_forward_backward,
    rng_stream_and_reparameterize_match_the_cpu,
    adam_update_and_rmsprop_update_over_several_steps,
    gather_images_matches_the_cpu,
    every_entry_point_has_a_pipeline,
    bindings_are_checked_by_name,
);
