//! Inference on the GPU: a `Network` holding a checkpoint's parameters, no optimizer
//! state and no gradient buffers. The look-inside commands, `cvae eval` and the
//! benchmark's evaluation run through it. Each call uploads its inputs, runs, and
//! reads its result back (these are one-off calls, not a training loop).

use anyhow::{anyhow, bail, Result};

use super::kernels::{Dispatch, Kernels};
use super::network::{Network, Noise};
use super::ops::{Ops, Packs, StepUniform, Variant};
use super::plan::Plan;
use super::Gpu;
use crate::math::sigmoid;
use crate::model::{KlKind, Model};

pub struct Runner<'a> {
    gpu: &'a Gpu,
    kernels: &'a Kernels,
    net: Network<'a>,
    step: wgpu::Buffer,
    /// The closed-form KL per image of the chunk being evaluated.
    kl_closed: wgpu::Buffer,
}

impl<'a> Runner<'a> {
    /// A network holding `params`, for up to `cap` images at once, its layers run by
    /// the families of `plan`.
    pub fn new(gpu: &'a Gpu, kernels: &'a Kernels, model: &'a Model, params: &[f32], cap: usize, plan: Plan) -> Result<Runner<'a>> {
        if cap == 0 {
            bail!("the runner needs room for at least one image");
        }
        let ops = Ops { gpu, k: kernels, variant: Variant::Auto, packs: None };
        let net = Network::new(ops, plan, model, params, cap, false)?;
        Ok(Runner { gpu, kernels, net, step: gpu.uniform("step", &StepUniform::default()), kl_closed: gpu.zeros("closed-form kl", cap) })
    }

    pub fn model(&self) -> &'a Model {
        self.net.model()
    }

    fn run(&self, d: &[Dispatch]) -> Result<()> {
        self.kernels.run_now(self.gpu, d)
    }

    /// Read the first `n` rows of `width` values of a buffer.
    fn read_rows(&self, buf: &wgpu::Buffer, n: usize, width: usize) -> Result<Vec<f32>> {
        let mut v: Vec<f32> = self.gpu.read(buf)?;
        v.truncate(n * width);
        Ok(v)
    }

    /// The encoder on the images `x` ([n, pixels], already preprocessed), in chunks
    /// the buffers hold. Returns [n, 2 * latent]: mean, then log-variance.
    pub fn encode(&mut self, x: &[f32]) -> Result<Vec<f32>> {
        let (pixels, width) = (self.model().image.len(), 2 * self.model().latent);
        let mut out = Vec::with_capacity(x.len() / pixels * width);
        for chunk in x.chunks(self.net.cap() * pixels) {
            let n = chunk.len() / pixels;
            self.gpu.queue.write_buffer(self.net.input(), 0, bytemuck::cast_slice(chunk));
            self.run(&self.net.encode(n, &Packs::default())?)?;
            out.extend(self.read_rows(self.net.enc_out(), n, width)?);
        }
        Ok(out)
    }

    /// The decoder on latent vectors `z` ([n, latent]); returns pixel probabilities [n, pixels].
    pub fn decode(&mut self, z: &[f32]) -> Result<Vec<f32>> {
        let (latent, pixels) = (self.model().latent, self.model().image.len());
        let mut out = Vec::with_capacity(z.len() / latent * pixels);
        for chunk in z.chunks(self.net.cap() * latent) {
            let n = chunk.len() / latent;
            self.gpu.queue.write_buffer(self.net.latent(), 0, bytemuck::cast_slice(chunk));
            self.run(&self.net.decode(n, &Packs::default())?)?;
            out.extend(self.read_rows(self.net.logits(), n, pixels)?.into_iter().map(sigmoid));
        }
        Ok(out)
    }

    /// Per image of `x` ([n, pixels], preprocessed; the first at place `first_image`
    /// of its set): the closed-form KL, and over `samples` draws z_k of q(z|x) with
    /// the noise of `key` at step k, indexed by the image's place (`Noise::by_image`),
    /// the terms of log p(x, z_k) / q(z_k|x). Each chunk of images is encoded once and
    /// its samples decoded as prebuilt submissions, several in flight, read back in
    /// groups. `progress` hears of every decoded batch (its image count).
    pub fn importance_terms(
        &mut self,
        x: &[f32],
        first_image: usize,
        samples: usize,
        key: [u32; 2],
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<ImageTerms>> {
        let pixels = self.model().image.len();
        let mut out = Vec::with_capacity(x.len() / pixels);
        for (c, chunk) in x.chunks(self.net.cap() * pixels).enumerate() {
            let n = chunk.len() / pixels;
            let first = first_image + c * self.net.cap();
            self.gpu.queue.write_buffer(self.net.input(), 0, bytemuck::cast_slice(chunk));
            let mut d = self.net.encode(n, &Packs::default())?;
            let o = self.net.ops();
            d.push(o.kl_analytic_forward(n, self.model().latent, 0.5, self.net.enc_out(), &self.kl_closed)?);
            self.run(&d)?;
            let mut terms: Vec<ImageTerms> = self.read_rows(&self.kl_closed, n, 1)?.into_iter().map(ImageTerms::new).collect();
            self.sample_chunk(n, first, samples, key, &mut terms, progress)?;
            out.extend(terms);
        }
        Ok(out)
    }

    /// The `samples` draws of one encoded chunk of `n` images (the first at `first`),
    /// folded into `terms`.
    fn sample_chunk(
        &mut self,
        n: usize,
        first: usize,
        samples: usize,
        key: [u32; 2],
        terms: &mut [ImageTerms],
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        let noise = Noise { key, step: &self.step, by_image: true };
        let mut list = vec![self.net.reparameterize(n, noise)?];
        list.extend(self.net.decode(n, &Packs::default())?);
        list.extend(self.net.loss_terms(n, KlKind::Mc, 0.0)?);
        // Read back every `group` samples: at most 2^20 values per buffer.
        let group = samples.min(((1 << 20) / n).max(1));
        let (ce_all, kl_all) =
            (self.gpu.zeros("ce of a group of samples", group * n), self.gpu.zeros("kl of a group of samples", group * n));
        let mut in_flight = std::collections::VecDeque::new();
        for k0 in (0..samples).step_by(group) {
            let ks = group.min(samples - k0);
            for j in 0..ks {
                let s = StepUniform { step: (k0 + j) as u32, batch_start: first as u32, ..Default::default() };
                self.gpu.queue.write_buffer(&self.step, 0, bytemuck::bytes_of(&s));
                let mut enc = self.gpu.device.create_command_encoder(&Default::default());
                self.kernels.record(self.gpu, &mut enc, &list)?;
                let (at, len) = ((j * n * 4) as u64, (n * 4) as u64);
                enc.copy_buffer_to_buffer(self.net.ce(), 0, &ce_all, at, len);
                enc.copy_buffer_to_buffer(self.net.kl(), 0, &kl_all, at, len);
                self.gpu.check()?;
                in_flight.push_back(self.gpu.queue.submit([enc.finish()]));
                if in_flight.len() > 3 {
                    let oldest = in_flight.pop_front().expect("non-empty");
                    self.gpu
                        .device
                        .poll(wgpu::PollType::Wait { submission_index: Some(oldest), timeout: None })
                        .map_err(|e| anyhow!("the GPU stopped responding: {e}"))?;
                }
                progress(n);
            }
            let (ce, kl) = (self.read_rows(&ce_all, ks * n, 1)?, self.read_rows(&kl_all, ks * n, 1)?);
            in_flight.clear();
            for j in 0..ks {
                for (i, t) in terms.iter_mut().enumerate() {
                    t.add(ce[j * n + i], kl[j * n + i]);
                }
            }
        }
        Ok(())
    }
}

/// What `cvae eval` keeps of one image over its samples: running sums, so that any
/// number of samples takes the same memory.
#[derive(Clone, Debug)]
pub struct ImageTerms {
    /// KL(q(z|x) || p(z)) in closed form: exact given the encoder.
    pub kl_closed: f64,
    samples: usize,
    ce_sum: f64,
    kl_sum: f64,
    /// log sum over samples of exp(w_k - max_w), and max_w, w_k = -ce_k - kl_k.
    lse_max: f64,
    lse_sum: f64,
}

impl ImageTerms {
    fn new(kl_closed: f32) -> ImageTerms {
        ImageTerms { kl_closed: kl_closed as f64, samples: 0, ce_sum: 0.0, kl_sum: 0.0, lse_max: f64::NEG_INFINITY, lse_sum: 0.0 }
    }

    /// Fold in one sample: -log p(x|z) and log q(z|x) - log p(z).
    pub fn add(&mut self, ce: f32, kl: f32) {
        let w = -(ce as f64) - kl as f64;
        self.samples += 1;
        self.ce_sum += ce as f64;
        self.kl_sum += kl as f64;
        if w > self.lse_max {
            self.lse_sum = self.lse_sum * (self.lse_max - w).exp() + 1.0;
            self.lse_max = w;
        } else {
            self.lse_sum += (w - self.lse_max).exp();
        }
    }

    /// Mean over the samples of -log p(x|z).
    pub fn reconstruction(&self) -> f64 {
        self.ce_sum / self.samples as f64
    }
    /// Mean over the samples of log q(z|x) - log p(z): the Monte Carlo KL.
    pub fn kl(&self) -> f64 {
        self.kl_sum / self.samples as f64
    }
    /// The single-sample ELBO averaged over the samples.
    pub fn elbo(&self) -> f64 {
        -self.reconstruction() - self.kl()
    }
    /// The importance-weighted bound on log p(x) with all the samples (IWAE).
    pub fn log_px(&self) -> f64 {
        self.lse_max + (self.lse_sum / self.samples as f64).ln()
    }
}
