//! Inference on the GPU: a `Network` holding a checkpoint's parameters, no optimizer
//! state and no gradient buffers. The look-inside commands, `cvae eval` and the
//! benchmark's evaluation run through it. Each call uploads its inputs, runs, and
//! reads its result back (these are one-off calls, not a training loop).

use anyhow::{bail, Result};

use super::kernels::{Dispatch, Kernels};
use super::network::{Network, Noise};
use super::ops::{Ops, StepUniform, Variant};
use super::plan::Plan;
use super::Gpu;
use crate::math::sigmoid;
use crate::model::{KlKind, Model};
use crate::rng::{Rng, Stream};

pub struct Runner<'a> {
    gpu: &'a Gpu,
    kernels: &'a Kernels,
    net: Network<'a>,
    step: wgpu::Buffer,
}

impl<'a> Runner<'a> {
    /// A network holding `params`, for up to `cap` images at once, its layers run by
    /// the families of `plan`.
    pub fn new(gpu: &'a Gpu, kernels: &'a Kernels, model: &'a Model, params: &[f32], cap: usize, plan: Plan) -> Result<Runner<'a>> {
        if cap == 0 {
            bail!("the runner needs room for at least one image");
        }
        let ops = Ops { gpu, k: kernels, variant: Variant::Auto };
        let net = Network::new(ops, plan, model, params, cap, false)?;
        Ok(Runner { gpu, kernels, net, step: gpu.uniform("step", &StepUniform::default()) })
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
            self.run(&self.net.encode(n)?)?;
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
            self.run(&self.net.decode(n)?)?;
            out.extend(self.read_rows(self.net.logits(), n, pixels)?.into_iter().map(sigmoid));
        }
        Ok(out)
    }

    /// One importance sample for up to `cap` images: z from q(z|x) with noise
    /// (EvalNoise stream of `rng`, step `k`), then per image the summed cross-entropy
    /// (-log p(x|z)) and log q(z|x) - log p(z). Returns (ce, kl) per image.
    pub fn sample_terms(&mut self, x: &[f32], rng: &Rng, k: u32) -> Result<(Vec<f32>, Vec<f32>)> {
        let n = x.len() / self.model().image.len();
        if n > self.net.cap() {
            bail!("sample_terms takes at most {} images at once, got {n}", self.net.cap());
        }
        self.gpu.queue.write_buffer(self.net.input(), 0, bytemuck::cast_slice(x));
        self.gpu.queue.write_buffer(&self.step, 0, bytemuck::bytes_of(&StepUniform { step: k, ..Default::default() }));
        let mut d = self.net.encode(n)?;
        d.push(self.net.reparameterize(n, Noise { key: rng.key(Stream::EvalNoise), step: &self.step })?);
        d.extend(self.net.decode(n)?);
        d.extend(self.net.loss_terms(n, KlKind::Mc, 0.0)?);
        self.run(&d)?;
        Ok((self.read_rows(self.net.ce(), n, 1)?, self.read_rows(self.net.kl(), n, 1)?))
    }
}
