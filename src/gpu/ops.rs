//! Launchers: one Rust function per WGSL entry point, with the same name as the
//! entry point and as its CPU twin in `src/cpu/`. Each returns a `Dispatch` to
//! record; none of them submits. Buffers are passed by their binding names in the
//! shader; the uniform structs are in `uniforms.rs`.

use anyhow::Result;

use super::kernels::{Dispatch, Kernels};
pub use super::uniforms::StepUniform;
use super::uniforms::{ActUniform, ConvUniform, DenseUniform, GatherUniform, KlUniform, LossUniform, OptimUniform, ReparamUniform};
use super::Gpu;
use crate::model::ConvGeom;

/// llvmpipe (lavapipe) counts every loop iteration of an invocation, over all its
/// loops together, and silently stops looping after 65535. Kernels whose work grows
/// with the batch are split into slices that stay under this budget (with a margin
/// for their other loops).
pub const LOOP_BUDGET: usize = 60_000;

/// Images per batch slice so that a kernel looping over images, rows and columns
/// (images * (1 + h + h * w) iterations) stays within `LOOP_BUDGET`.
fn images_within_loop_budget(h: usize, w: usize) -> usize {
    (LOOP_BUDGET / (1 + h + h * w)).max(1)
}

/// Sizes and offsets as the shaders see them. The trainer checks every size against
/// the device's limits before building any dispatch, so this cannot overflow there.
fn u(x: usize) -> u32 {
    u32::try_from(x).expect("tensor sizes are checked to fit in u32 before dispatch")
}

impl ConvUniform {
    pub fn new(g: &ConvGeom, w: Weights<'_>, relu: bool) -> Self {
        ConvUniform {
            batch: u(g.batch),
            in_h: u(g.in_h),
            in_w: u(g.in_w),
            in_c: u(g.in_c),
            out_h: u(g.out_h),
            out_w: u(g.out_w),
            out_c: u(g.out_c),
            k_h: u(g.k_h),
            k_w: u(g.k_w),
            stride: u(g.stride),
            pad_top: u(g.pad_top),
            pad_left: u(g.pad_left),
            w_off: u(w.w_off),
            b_off: u(w.b_off),
            relu: relu as u32,
            bias: 0,
            slice_images: u(g.batch),
            slices: 1,
            ..Default::default()
        }
    }
}

/// A layer's weights: the flat parameter buffer and where its kernel and bias start.
#[derive(Clone, Copy)]
pub struct Weights<'a> {
    pub params: &'a wgpu::Buffer,
    pub w_off: usize,
    pub b_off: usize,
}

/// Which implementation of an op to launch. `Blocked` kernels compute a block of
/// outputs per invocation from vec4 loads and need channel counts divisible by 4;
/// where a shape does not allow it the portable kernel runs instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// The fastest kernel that fits the shape.
    #[default]
    Auto,
    /// One output per invocation: the simplest kernels, the reference for the others.
    Portable,
    /// Register-blocked kernels (no optional features needed).
    Blocked,
}

/// The launchers, bound to a device and its pipelines.
#[derive(Clone, Copy)]
pub struct Ops<'a> {
    pub gpu: &'a Gpu,
    pub k: &'a Kernels,
    pub variant: Variant,
}

impl Ops<'_> {
    /// Whether the blocked kernels fit a conv geometry and a kernel offset: output
    /// channels (and the kernel) in vec4s. `vec4_in` says whether the input channels are too.
    fn blocked(&self, g: &ConvGeom, w_off: usize) -> Option<bool> {
        (self.variant != Variant::Portable && g.out_c.is_multiple_of(4) && w_off.is_multiple_of(4)).then_some(g.in_c.is_multiple_of(4))
    }

    /// conv2d_forward_blocked[_scalar] on conv geometry `g` (input `x`, output `y`).
    fn forward_blocked(
        &self,
        g: &ConvGeom,
        x: &wgpu::Buffer,
        w: Weights<'_>,
        relu: bool,
        bias: bool,
        y: &wgpu::Buffer,
        vec4_in: bool,
    ) -> Result<Dispatch> {
        let u = ConvUniform { bias: bias as u32, ..ConvUniform::new(g, w, relu) };
        let threads = g.batch.div_ceil(4) * g.out_h * g.out_w * g.out_c / 4;
        if vec4_in {
            self.k.dispatch(self.gpu, "conv2d_forward_blocked", &u, &[("x4", x), ("w4", w.params), ("y4", y)], threads)
        } else {
            self.k.dispatch(self.gpu, "conv2d_forward_blocked_scalar", &u, &[("x", x), ("w4", w.params), ("y4", y)], threads)
        }
    }

    /// conv2d_backward_input_blocked[_scalar] on conv geometry `g` (from `dy` to `dx`).
    fn backward_input_blocked(
        &self,
        g: &ConvGeom,
        dy: &wgpu::Buffer,
        w: Weights<'_>,
        relu: bool,
        bias: bool,
        dx: &wgpu::Buffer,
        vec4_in: bool,
    ) -> Result<Dispatch> {
        let u = ConvUniform { bias: bias as u32, ..ConvUniform::new(g, w, relu) };
        if vec4_in {
            self.k.dispatch(
                self.gpu,
                "conv2d_backward_input_blocked",
                &u,
                &[("w4", w.params), ("dy4", dy), ("dx4", dx)],
                g.batch.div_ceil(4) * g.in_h * g.in_w * g.in_c / 4,
            )
        } else {
            self.k.dispatch(
                self.gpu,
                "conv2d_backward_input_blocked_scalar",
                &u,
                &[("w4", w.params), ("dy4", dy), ("dx", dx)],
                g.batch.div_ceil(4) * g.in_h * g.in_w * g.in_c,
            )
        }
    }

    /// conv2d_backward_kernel_blocked[_scalar] on conv geometry `g`: partial sums over
    /// slices of the batch small enough to stay in cache, then their reduction in slice
    /// order. None when the shape does not fit (the scalar form needs out_c % 16 == 0).
    fn backward_kernel_blocked(
        &self,
        g: &ConvGeom,
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        grads: Weights<'_>,
        vec4_in: bool,
    ) -> Result<Option<Dispatch>> {
        if !vec4_in && !g.out_c.is_multiple_of(16) {
            return Ok(None);
        }
        const SLICE_BYTES: usize = 256 << 10;
        let per_image = 4 * (g.in_h * g.in_w * g.in_c + g.out_h * g.out_w * g.out_c);
        let images = (SLICE_BYTES / per_image).min(images_within_loop_budget(g.out_h, g.out_w)).clamp(1, g.batch);
        let slices = g.batch.div_ceil(images);
        let part = self.gpu.zeros("partial kernel gradients", slices * g.kernel_len());
        let u = ConvUniform { slice_images: u(images), slices: u(slices), ..ConvUniform::new(g, grads, false) };
        let main = if vec4_in {
            self.k.dispatch(
                self.gpu,
                "conv2d_backward_kernel_blocked",
                &u,
                &[("x4", x), ("dy4", dy), ("part4", &part)],
                slices * g.kernel_len() / 16,
            )?
        } else {
            self.k.dispatch(
                self.gpu,
                "conv2d_backward_kernel_blocked_scalar",
                &u,
                &[("x", x), ("dy4", dy), ("part4", &part)],
                slices * g.kernel_len() / 16,
            )?
        };
        let reduce = self.k.dispatch(
            self.gpu,
            "conv2d_backward_kernel_reduce",
            &u,
            &[("grads", grads.params), ("partial_sums", &part)],
            g.kernel_len(),
        )?;
        Ok(Some(main.then(reduce).keeping(part)))
    }

    pub fn conv2d_forward(&self, g: &ConvGeom, x: &wgpu::Buffer, w: Weights<'_>, relu: bool, y: &wgpu::Buffer) -> Result<Dispatch> {
        if let Some(v4) = self.blocked(g, w.w_off) {
            return Ok(self.forward_blocked(g, x, w, relu, true, y, v4)?.with_flops(2.0 * g.macs(false) as f64));
        }
        let u = ConvUniform::new(g, w, relu);
        Ok(self
            .k
            .dispatch(self.gpu, "conv2d_forward", &u, &[("x", x), ("params", w.params), ("y", y)], g.out_len())?
            .with_flops(2.0 * g.macs(false) as f64))
    }
    pub fn conv2d_backward_input(&self, g: &ConvGeom, dy: &wgpu::Buffer, w: Weights<'_>, dx: &wgpu::Buffer) -> Result<Dispatch> {
        if let Some(v4) = self.blocked(g, w.w_off) {
            return Ok(self.backward_input_blocked(g, dy, w, false, false, dx, v4)?.with_flops(2.0 * g.macs(false) as f64));
        }
        let u = ConvUniform::new(g, w, false);
        Ok(self
            .k
            .dispatch(self.gpu, "conv2d_backward_input", &u, &[("params", w.params), ("dy", dy), ("dx", dx)], g.in_len())?
            .with_flops(2.0 * g.macs(false) as f64))
    }
    /// Writes the kernel gradient at `w_off` of `grads` (overwriting).
    pub fn conv2d_backward_kernel(&self, g: &ConvGeom, x: &wgpu::Buffer, dy: &wgpu::Buffer, grads: Weights<'_>) -> Result<Dispatch> {
        if let Some(v4) = self.blocked(g, grads.w_off) {
            if let Some(d) = self.backward_kernel_blocked(g, x, dy, grads, v4)? {
                return Ok(d.with_flops(2.0 * g.macs(false) as f64));
            }
        }
        Ok(self.sliced_kernel_grad("conv2d_backward_kernel", g, (g.out_h, g.out_w), x, dy, grads)?.with_flops(2.0 * g.macs(false) as f64))
    }

    /// A portable kernel gradient over slices of the batch, then their reduction.
    /// `spatial` is the rows and columns the entry point loops over per image.
    fn sliced_kernel_grad(
        &self,
        entry: &str,
        g: &ConvGeom,
        spatial: (usize, usize),
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        grads: Weights<'_>,
    ) -> Result<Dispatch> {
        let images = images_within_loop_budget(spatial.0, spatial.1).min(g.batch);
        let slices = g.batch.div_ceil(images);
        let part = self.gpu.zeros("partial kernel gradients", slices * g.kernel_len());
        let u = ConvUniform { slice_images: u(images), slices: u(slices), ..ConvUniform::new(g, grads, false) };
        let main = self.k.dispatch(self.gpu, entry, &u, &[("x", x), ("dy", dy), ("part", &part)], slices * g.kernel_len())?;
        let reduce = self.k.dispatch(
            self.gpu,
            "conv2d_backward_kernel_reduce",
            &u,
            &[("grads", grads.params), ("partial_sums", &part)],
            g.kernel_len(),
        )?;
        Ok(main.then(reduce).keeping(part))
    }

    pub fn conv2d_transpose_forward(
        &self,
        g: &ConvGeom,
        x: &wgpu::Buffer,
        w: Weights<'_>,
        relu: bool,
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        if let Some(v4) = self.blocked(&g.as_forward_conv(), w.w_off) {
            return Ok(self.backward_input_blocked(&g.as_forward_conv(), x, w, relu, true, y, v4)?.with_flops(2.0 * g.macs(true) as f64));
        }
        let u = ConvUniform::new(g, w, relu);
        Ok(self
            .k
            .dispatch(self.gpu, "conv2d_transpose_forward", &u, &[("x", x), ("params", w.params), ("y", y)], g.out_len())?
            .with_flops(2.0 * g.macs(true) as f64))
    }
    pub fn conv2d_transpose_backward_input(&self, g: &ConvGeom, dy: &wgpu::Buffer, w: Weights<'_>, dx: &wgpu::Buffer) -> Result<Dispatch> {
        if let Some(v4) = self.blocked(&g.as_forward_conv(), w.w_off) {
            return Ok(self.forward_blocked(&g.as_forward_conv(), dy, w, false, false, dx, v4)?.with_flops(2.0 * g.macs(true) as f64));
        }
        let u = ConvUniform::new(g, w, false);
        Ok(self
            .k
            .dispatch(self.gpu, "conv2d_transpose_backward_input", &u, &[("params", w.params), ("dy", dy), ("dx", dx)], g.in_len())?
            .with_flops(2.0 * g.macs(true) as f64))
    }
    pub fn conv2d_transpose_backward_kernel(
        &self,
        g: &ConvGeom,
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        grads: Weights<'_>,
    ) -> Result<Dispatch> {
        if let Some(v4) = self.blocked(&g.as_forward_conv(), grads.w_off) {
            if let Some(d) = self.backward_kernel_blocked(&g.as_forward_conv(), dy, x, grads, v4)? {
                return Ok(d.with_flops(2.0 * g.macs(true) as f64));
            }
        }
        Ok(self
            .sliced_kernel_grad("conv2d_transpose_backward_kernel", g, (g.in_h, g.in_w), x, dy, grads)?
            .with_flops(2.0 * g.macs(true) as f64))
    }

    fn dense_uniform(batch: usize, inputs: usize, outputs: usize, w: Weights<'_>, relu: bool) -> DenseUniform {
        DenseUniform {
            batch: u(batch),
            inputs: u(inputs),
            outputs: u(outputs),
            w_off: u(w.w_off),
            b_off: u(w.b_off),
            relu: relu as u32,
            ..Default::default()
        }
    }
    pub fn dense_forward(
        &self,
        batch: usize,
        inputs: usize,
        outputs: usize,
        x: &wgpu::Buffer,
        w: Weights<'_>,
        relu: bool,
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        if let Some(v4) = self.blocked(&ConvGeom::dense(batch, inputs, outputs), w.w_off) {
            return Ok(self
                .forward_blocked(&ConvGeom::dense(batch, inputs, outputs), x, w, relu, true, y, v4)?
                .with_flops(2.0 * (batch * inputs * outputs) as f64));
        }
        let u = Self::dense_uniform(batch, inputs, outputs, w, relu);
        Ok(self
            .k
            .dispatch(self.gpu, "dense_forward", &u, &[("x", x), ("params", w.params), ("y", y)], batch * outputs)?
            .with_flops(2.0 * (batch * inputs * outputs) as f64))
    }
    pub fn dense_backward_input(
        &self,
        batch: usize,
        inputs: usize,
        outputs: usize,
        dy: &wgpu::Buffer,
        w: Weights<'_>,
        dx: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        if let Some(v4) = self.blocked(&ConvGeom::dense(batch, inputs, outputs), w.w_off) {
            return Ok(self
                .backward_input_blocked(&ConvGeom::dense(batch, inputs, outputs), dy, w, false, false, dx, v4)?
                .with_flops(2.0 * (batch * inputs * outputs) as f64));
        }
        let u = Self::dense_uniform(batch, inputs, outputs, w, false);
        Ok(self
            .k
            .dispatch(self.gpu, "dense_backward_input", &u, &[("params", w.params), ("dy", dy), ("dx", dx)], batch * inputs)?
            .with_flops(2.0 * (batch * inputs * outputs) as f64))
    }
    pub fn dense_backward_kernel(
        &self,
        batch: usize,
        inputs: usize,
        outputs: usize,
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        grads: Weights<'_>,
    ) -> Result<Dispatch> {
        if let Some(v4) = self.blocked(&ConvGeom::dense(batch, inputs, outputs), grads.w_off) {
            if let Some(d) = self.backward_kernel_blocked(&ConvGeom::dense(batch, inputs, outputs), x, dy, grads, v4)? {
                return Ok(d.with_flops(2.0 * (batch * inputs * outputs) as f64));
            }
        }
        let u = Self::dense_uniform(batch, inputs, outputs, grads, false);
        Ok(self
            .k
            .dispatch(self.gpu, "dense_backward_kernel", &u, &[("x", x), ("dy", dy), ("grads", grads.params)], inputs * outputs)?
            .with_flops(2.0 * (batch * inputs * outputs) as f64))
    }

    /// In place on `dy`: zero where the layer output `y` is not positive.
    pub fn relu_backward(&self, n: usize, y: &wgpu::Buffer, dy: &wgpu::Buffer) -> Result<Dispatch> {
        let u = ActUniform { rows: u(n), channels: 1, ..Default::default() };
        self.k.dispatch(self.gpu, "relu_backward", &u, &[("y", y), ("dy", dy)], n)
    }
    /// grads[b_off + c] = sum over rows of dy[row, c]; one workgroup per channel.
    pub fn bias_backward(&self, rows: usize, channels: usize, dy: &wgpu::Buffer, grads: &wgpu::Buffer, b_off: usize) -> Result<Dispatch> {
        let u = ActUniform { rows: u(rows), channels: u(channels), b_off: u(b_off), ..Default::default() };
        self.k.dispatch_groups(self.gpu, "bias_backward", &u, &[("dy", dy), ("grads", grads)], channels)
    }

    fn loss_uniform(batch: usize, pixels: usize, recon_scale: f32) -> LossUniform {
        LossUniform {
            batch: u(batch),
            pixels: u(pixels),
            grad_scale: recon_scale / batch as f32,
            recon_scale,
            inv_batch: 1.0 / batch as f32,
            ..Default::default()
        }
    }
    /// One workgroup per example.
    pub fn sigmoid_cross_entropy_forward(
        &self,
        batch: usize,
        pixels: usize,
        logits: &wgpu::Buffer,
        targets: &wgpu::Buffer,
        ce: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = Self::loss_uniform(batch, pixels, 1.0);
        self.k.dispatch_groups(
            self.gpu,
            "sigmoid_cross_entropy_forward",
            &u,
            &[("logits", logits), ("targets", targets), ("ce", ce)],
            batch,
        )
    }
    /// dlogits = recon_scale / batch * (sigmoid(logits) - targets).
    pub fn sigmoid_cross_entropy_backward(
        &self,
        batch: usize,
        pixels: usize,
        recon_scale: f32,
        logits: &wgpu::Buffer,
        targets: &wgpu::Buffer,
        dlogits: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = Self::loss_uniform(batch, pixels, recon_scale);
        self.k.dispatch(
            self.gpu,
            "sigmoid_cross_entropy_backward",
            &u,
            &[("logits", logits), ("targets", targets), ("dlogits", dlogits)],
            batch * pixels,
        )
    }
    /// losses[step.loss_slot] = mean over examples of recon_scale * ce + kl.
    pub fn loss_reduce(
        &self,
        batch: usize,
        recon_scale: f32,
        ce: &wgpu::Buffer,
        kl: &wgpu::Buffer,
        losses: &wgpu::Buffer,
        step: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = Self::loss_uniform(batch, 1, recon_scale);
        self.k.dispatch_groups(self.gpu, "loss_reduce", &u, &[("ce", ce), ("kl", kl), ("losses", losses), ("step", step)], 1)
    }

    fn kl_uniform(batch: usize, latent: usize, scale: f32, kl_scale: f32) -> KlUniform {
        KlUniform { batch: u(batch), latent: u(latent), scale, kl_scale, ..Default::default() }
    }
    pub fn kl_mc_forward(&self, batch: usize, latent: usize, enc: &wgpu::Buffer, z: &wgpu::Buffer, kl: &wgpu::Buffer) -> Result<Dispatch> {
        let u = Self::kl_uniform(batch, latent, 0.0, 0.0);
        self.k.dispatch(self.gpu, "kl_mc_forward", &u, &[("enc", enc), ("z", z), ("kl", kl)], batch)
    }
    #[allow(clippy::too_many_arguments)]
    pub fn kl_mc_backward(
        &self,
        batch: usize,
        latent: usize,
        scale: f32,
        dz: &wgpu::Buffer,
        enc: &wgpu::Buffer,
        eps: &wgpu::Buffer,
        z: &wgpu::Buffer,
        denc: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = Self::kl_uniform(batch, latent, scale, 0.0);
        self.k.dispatch(self.gpu, "kl_mc_backward", &u, &[("enc", enc), ("z", z), ("eps", eps), ("dz", dz), ("denc", denc)], batch * latent)
    }
    pub fn kl_analytic_forward(
        &self,
        batch: usize,
        latent: usize,
        kl_scale: f32,
        enc: &wgpu::Buffer,
        kl: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = Self::kl_uniform(batch, latent, 0.0, kl_scale);
        self.k.dispatch(self.gpu, "kl_analytic_forward", &u, &[("enc", enc), ("kl", kl)], batch)
    }
    #[allow(clippy::too_many_arguments)]
    pub fn kl_analytic_backward(
        &self,
        batch: usize,
        latent: usize,
        kl_scale: f32,
        scale: f32,
        dz: &wgpu::Buffer,
        enc: &wgpu::Buffer,
        eps: &wgpu::Buffer,
        denc: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = Self::kl_uniform(batch, latent, scale, kl_scale);
        self.k.dispatch(self.gpu, "kl_analytic_backward", &u, &[("enc", enc), ("eps", eps), ("dz", dz), ("denc", denc)], batch * latent)
    }

    /// z and eps for step `step.step` of the stream with key `key` (see `Rng::key`).
    pub fn reparameterize(
        &self,
        batch: usize,
        latent: usize,
        key: [u32; 2],
        enc: &wgpu::Buffer,
        step: &wgpu::Buffer,
        z: &wgpu::Buffer,
        eps: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = ReparamUniform { batch: u(batch), latent: u(latent), key0: key[0], key1: key[1] };
        self.k.dispatch(self.gpu, "reparameterize", &u, &[("enc", enc), ("z", z), ("eps", eps), ("step", step)], batch * latent)
    }
    /// The raw RNG stream (bits as 4 x u32 and normals) of indices 0..n, for tests.
    pub fn rng_stream(
        &self,
        n: usize,
        key: [u32; 2],
        step: &wgpu::Buffer,
        bits: &wgpu::Buffer,
        normals: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = ReparamUniform { batch: u(n), latent: 1, key0: key[0], key1: key[1] };
        self.k.dispatch(self.gpu, "rng_stream", &u, &[("eps", normals), ("bits", bits), ("step", step)], n)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn adam_update(
        &self,
        n: usize,
        beta1: f32,
        beta2: f32,
        eps: f32,
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        m: &wgpu::Buffer,
        v: &wgpu::Buffer,
        step: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = OptimUniform { n: u(n), lr: 0.0, beta1, beta2, eps, ..Default::default() };
        self.k.dispatch(self.gpu, "adam_update", &u, &[("params", params), ("grads", grads), ("m", m), ("v", v), ("step", step)], n)
    }
    #[allow(clippy::too_many_arguments)]
    pub fn rmsprop_update(
        &self,
        n: usize,
        lr: f32,
        rho: f32,
        eps: f32,
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        v: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = OptimUniform { n: u(n), lr, beta1: 0.0, beta2: rho, eps, ..Default::default() };
        self.k.dispatch(self.gpu, "rmsprop_update", &u, &[("params", params), ("grads", grads), ("v", v)], n)
    }

    /// x = the preprocessed images order[step.batch_start ..][..batch] of the packed byte set.
    #[allow(clippy::too_many_arguments)]
    pub fn gather_images(
        &self,
        batch: usize,
        pixels: usize,
        binarize: bool,
        images: &wgpu::Buffer,
        order: &wgpu::Buffer,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = GatherUniform { batch: u(batch), pixels: u(pixels), binarize: binarize as u32, ..Default::default() };
        self.k.dispatch(self.gpu, "gather_images", &u, &[("images", images), ("order", order), ("x", x), ("step", step)], batch * pixels)
    }
}
