//! The per-batch scheduler: every buffer the model needs on the GPU, and the
//! dispatch lists of one training step, one evaluation batch and one decode, built
//! once from the model description. It reads like the CPU reference's
//! `vae::forward` / `vae::backward` / `optimizer_step`.
//!
//! Per step the host writes one small uniform (step number, batch start, loss slot,
//! Adam's step size), records the prebuilt dispatches into one compute pass and
//! submits. Nothing is read back inside the batch loop: each batch's loss goes to
//! its own slot of a GPU buffer that is read once per epoch.

use anyhow::{bail, Result};

use super::kernels::{Dispatch, Kernels};
use super::ops::{Ops, StepUniform, Variant, Weights};
use super::Gpu;
use crate::cpu::optim::adam_alpha;
use crate::data::Split;
use crate::model::{Activation, KlKind, Layer, LayerInfo, LossSpec, Model, Optimizer};
use crate::rng::{Rng, Stream};

/// How many submissions may be queued before the host waits for the oldest:
/// enough to keep the device busy, few enough to bound queued memory.
const IN_FLIGHT: usize = 3;

/// Activations and their gradients: one buffer per distinct tensor (Flatten and
/// Reshape alias their input), indexed by layer.
struct Net {
    bufs: Vec<wgpu::Buffer>,
    grads: Vec<wgpu::Buffer>,
    /// enc[0] is the input x; enc[i + 1] the output of encoder layer i.
    enc: Vec<usize>,
    /// dec[0] is z; dec[i + 1] the output of decoder layer i (the last is the logits).
    dec: Vec<usize>,
}

impl Net {
    fn new(gpu: &Gpu, model: &Model, cap: usize) -> Net {
        let mut bufs = Vec::new();
        let mut grads = Vec::new();
        let mut alloc = |label: &str, per_example: usize| {
            bufs.push(gpu.zeros(label, cap * per_example));
            grads.push(gpu.zeros(&format!("d_{label}"), cap * per_example));
            bufs.len() - 1
        };
        let mut enc = vec![alloc("x", model.image.len())];
        for l in &model.encoder {
            let id = if matches!(l.layer, Layer::Flatten | Layer::Reshape { .. }) {
                *enc.last().expect("input")
            } else {
                alloc(&format!("encoder.{}", l.name), l.output.len())
            };
            enc.push(id);
        }
        let mut dec = vec![alloc("z", model.latent)];
        for l in &model.decoder {
            let id = if matches!(l.layer, Layer::Flatten | Layer::Reshape { .. }) {
                *dec.last().expect("input")
            } else {
                alloc(&format!("decoder.{}", l.name), l.output.len())
            };
            dec.push(id);
        }
        Net { bufs, grads, enc, dec }
    }
}

/// Where the batch comes from: which packed image set, which order, which step uniform.
#[derive(Clone, Copy)]
enum Source {
    Train,
    Test,
}

pub struct Trainer<'a> {
    pub variant: Variant,
    pub gpu: &'a Gpu,
    pub kernels: &'a Kernels,
    pub model: &'a Model,
    pub opt: Optimizer,
    pub batch: usize,
    pub rng: Rng,
    pub binarize: bool,
    pub params: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    /// Optimizer state: Adam's m and v, or RMSprop's v.
    pub slots: Vec<wgpu::Buffer>,
    train_images: wgpu::Buffer,
    train_order: wgpu::Buffer,
    test_images: wgpu::Buffer,
    test_order: wgpu::Buffer,
    pub train_len: usize,
    pub test_len: usize,
    step_buf: wgpu::Buffer,
    eval_step_buf: wgpu::Buffer,
    train_losses: wgpu::Buffer,
    eval_losses: wgpu::Buffer,
    eps: wgpu::Buffer,
    ce: wgpu::Buffer,
    kl: wgpu::Buffer,
    fixed_z: wgpu::Buffer,
    pub fixed_count: usize,
    net: Net,
    train_full: Vec<Dispatch>,
    train_tail: Vec<Dispatch>,
    eval_full: Vec<Dispatch>,
    eval_tail: Vec<Dispatch>,
    decode_fixed: Vec<Dispatch>,
    /// Training steps done so far (the noise counter and Adam's t).
    pub step: u64,
    /// The largest batch the activation buffers hold.
    pub cap: usize,
    in_flight: std::collections::VecDeque<wgpu::SubmissionIndex>,
    /// Time the host spent waiting for the device (flow control), for the benchmark.
    pub wait_seconds: f64,
    /// Time spent inside `queue.submit` (some drivers do work there).
    pub submit_seconds: f64,
}

impl<'a> Trainer<'a> {
    /// Upload the data and the initial state, and build every dispatch list.
    /// `fixed_z` are the latent vectors of the sample grids ([count, latent]).
    /// `variant` picks the kernels (`Variant::Auto`: the fastest that fit).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &'a Gpu,
        kernels: &'a Kernels,
        model: &'a Model,
        opt: Optimizer,
        batch: usize,
        seed: u64,
        binarize: bool,
        train: &Split,
        test: &Split,
        params: &[f32],
        fixed_z: &[f32],
        variant: Variant,
    ) -> Result<Trainer<'a>> {
        if batch == 0 {
            bail!("the batch size must be at least 1");
        }
        if train.is_empty() || test.is_empty() {
            bail!("the training and test sets must each hold at least one image (got {} and {})", train.len(), test.len());
        }
        let fixed_count = fixed_z.len() / model.latent;
        let cap = batch.max(fixed_count);
        check_limits(gpu, model, cap, train)?;
        let rng = Rng::new(seed);
        let net = Net::new(gpu, model, cap);
        let steps_per_epoch = train.len().div_ceil(batch);
        let eval_batches = test.len().div_ceil(batch);
        let identity: Vec<u32> = (0..test.len() as u32).collect();
        let mut t = Trainer {
            variant,
            gpu,
            kernels,
            model,
            opt,
            batch,
            rng,
            binarize,
            params: gpu.upload("params", params),
            grads: gpu.zeros("grads", model.num_params),
            slots: (0..opt.state_slots()).map(|i| gpu.zeros(&format!("optimizer slot {i}"), model.num_params)).collect(),
            train_images: gpu.upload_bytes("train images", &train.images),
            train_order: gpu.zeros("train order", train.len()),
            test_images: gpu.upload_bytes("test images", &test.images),
            test_order: gpu.upload("test order", &identity),
            train_len: train.len(),
            test_len: test.len(),
            step_buf: gpu.uniform("step", &StepUniform::default()),
            eval_step_buf: gpu.uniform("eval step", &StepUniform::default()),
            train_losses: gpu.zeros("train losses", steps_per_epoch),
            eval_losses: gpu.zeros("eval losses", eval_batches),
            eps: gpu.zeros("eps", cap * model.latent),
            ce: gpu.zeros("ce", cap),
            kl: gpu.zeros("kl", cap),
            fixed_z: gpu.upload("fixed z", fixed_z),
            fixed_count,
            net,
            train_full: Vec::new(),
            train_tail: Vec::new(),
            eval_full: Vec::new(),
            eval_tail: Vec::new(),
            decode_fixed: Vec::new(),
            step: 0,
            cap,
            in_flight: Default::default(),
            wait_seconds: 0.0,
            submit_seconds: 0.0,
        };
        t.train_full = t.build_train(batch)?;
        let tail = train.len() % batch;
        t.train_tail = if tail > 0 { t.build_train(tail)? } else { Vec::new() };
        t.eval_full = t.build_eval(batch)?;
        let tail = test.len() % batch;
        t.eval_tail = if tail > 0 { t.build_eval(tail)? } else { Vec::new() };
        t.decode_fixed = if fixed_count > 0 { t.build_decode(fixed_count)? } else { Vec::new() };
        Ok(t)
    }

    fn ops(&self) -> Ops<'a> {
        Ops { gpu: self.gpu, k: self.kernels, variant: self.variant }
    }

    fn weights<'b>(&self, buf: &'b wgpu::Buffer, l: &LayerInfo) -> Weights<'b> {
        let k = l.kernel_param.expect("layer with weights");
        Weights { params: buf, w_off: self.model.params[k].offset, b_off: self.model.params[k + 1].offset }
    }

    fn layer_forward(&self, net: &str, l: &LayerInfo, n: usize, x: &wgpu::Buffer, y: &wgpu::Buffer) -> Result<Option<Dispatch>> {
        let o = self.ops();
        let relu = l.activation() == Activation::Relu;
        let label = format!("{net}.{}", l.name);
        Ok(Some(
            match l.layer {
                Layer::Conv2D { .. } => o.conv2d_forward(&l.conv_geom(n).expect("conv"), x, self.weights(&self.params, l), relu, y)?,
                Layer::Conv2DTranspose { .. } => {
                    o.conv2d_transpose_forward(&l.conv_geom(n).expect("conv"), x, self.weights(&self.params, l), relu, y)?
                }
                Layer::Dense { units, .. } => o.dense_forward(n, l.input.len(), units, x, self.weights(&self.params, l), relu, y)?,
                Layer::Flatten | Layer::Reshape { .. } => return Ok(None),
            }
            .labeled(&label),
        ))
    }

    /// Backward through one layer: ReLU mask (in place on dy), kernel and bias
    /// gradients into `grads`, and dx when asked.
    fn layer_backward(
        &self,
        net: &str,
        l: &LayerInfo,
        n: usize,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        dx: Option<&wgpu::Buffer>,
    ) -> Result<Vec<Dispatch>> {
        let o = self.ops();
        let mut d = Vec::new();
        if matches!(l.layer, Layer::Flatten | Layer::Reshape { .. }) {
            return Ok(d);
        }
        if l.activation() == Activation::Relu {
            d.push(o.relu_backward(n * l.output.len(), y, dy)?);
        }
        let gw = self.weights(&self.grads, l);
        let w = self.weights(&self.params, l);
        match l.layer {
            Layer::Conv2D { .. } | Layer::Conv2DTranspose { .. } => {
                let g = l.conv_geom(n).expect("conv");
                let transpose = matches!(l.layer, Layer::Conv2DTranspose { .. });
                d.push(if transpose {
                    o.conv2d_transpose_backward_kernel(&g, x, dy, gw)?
                } else {
                    o.conv2d_backward_kernel(&g, x, dy, gw)?
                });
                d.push(o.bias_backward(n * g.out_h * g.out_w, g.out_c, dy, &self.grads, gw.b_off)?);
                if let Some(dx) = dx {
                    d.push(if transpose {
                        o.conv2d_transpose_backward_input(&g, dy, w, dx)?
                    } else {
                        o.conv2d_backward_input(&g, dy, w, dx)?
                    });
                }
            }
            Layer::Dense { units, .. } => {
                let inputs = l.input.len();
                d.push(o.dense_backward_kernel(n, inputs, units, x, dy, gw)?);
                d.push(o.bias_backward(n, units, dy, &self.grads, gw.b_off)?);
                if let Some(dx) = dx {
                    d.push(o.dense_backward_input(n, inputs, units, dy, w, dx)?);
                }
            }
            Layer::Flatten | Layer::Reshape { .. } => unreachable!("returned above"),
        }
        let label = format!("{net}.{}", l.name);
        Ok(d.into_iter().map(|x| x.labeled(&label)).collect())
    }

    /// Encoder, reparameterisation, decoder, loss terms and the batch loss into
    /// `losses[step.loss_slot]`.
    fn build_forward(&self, n: usize, source: Source, loss: LossSpec, losses: &wgpu::Buffer) -> Result<Vec<Dispatch>> {
        let o = self.ops();
        let m = self.model;
        let net = &self.net;
        let (images, order, step, stream) = match source {
            Source::Train => (&self.train_images, &self.train_order, &self.step_buf, Stream::Noise),
            Source::Test => (&self.test_images, &self.test_order, &self.eval_step_buf, Stream::EvalNoise),
        };
        let pixels = m.image.len();
        let x = &net.bufs[net.enc[0]];
        let mut d = vec![o.gather_images(n, pixels, self.binarize, images, order, step, x)?.labeled("data")];
        for (i, l) in m.encoder.iter().enumerate() {
            d.extend(self.layer_forward("encoder", l, n, &net.bufs[net.enc[i]], &net.bufs[net.enc[i + 1]])?);
        }
        let enc_out = &net.bufs[*net.enc.last().expect("encoder")];
        let z = &net.bufs[net.dec[0]];
        d.push(o.reparameterize(n, m.latent, self.rng.key(stream), enc_out, step, z, &self.eps)?.labeled("latent"));
        for (i, l) in m.decoder.iter().enumerate() {
            d.extend(self.layer_forward("decoder", l, n, &net.bufs[net.dec[i]], &net.bufs[net.dec[i + 1]])?);
        }
        let logits = &net.bufs[*net.dec.last().expect("decoder")];
        d.push(o.sigmoid_cross_entropy_forward(n, pixels, logits, x, &self.ce)?.labeled("loss"));
        d.push(
            match loss.kl {
                KlKind::Mc => o.kl_mc_forward(n, m.latent, enc_out, z, &self.kl)?,
                KlKind::Analytic => o.kl_analytic_forward(n, m.latent, loss.kl_scale, enc_out, &self.kl)?,
            }
            .labeled("latent"),
        );
        d.push(o.loss_reduce(n, loss.recon_scale, &self.ce, &self.kl, losses, step)?.labeled("loss"));
        Ok(d)
    }

    /// One training step on a batch of `n`: forward, loss, backward, optimizer.
    fn build_train(&self, n: usize) -> Result<Vec<Dispatch>> {
        let o = self.ops();
        let m = self.model;
        let net = &self.net;
        let mut d = self.build_forward(n, Source::Train, m.loss, &self.train_losses)?;
        let x = &net.bufs[net.enc[0]];
        let logits_id = *net.dec.last().expect("decoder");
        d.push(
            o.sigmoid_cross_entropy_backward(n, m.image.len(), m.loss.recon_scale, &net.bufs[logits_id], x, &net.grads[logits_id])?
                .labeled("loss"),
        );
        for (i, l) in m.decoder.iter().enumerate().rev() {
            let (xi, yi) = (net.dec[i], net.dec[i + 1]);
            d.extend(self.layer_backward("decoder", l, n, &net.bufs[xi], &net.bufs[yi], &net.grads[yi], Some(&net.grads[xi]))?);
        }
        let enc_id = *net.enc.last().expect("encoder");
        let z_id = net.dec[0];
        let scale = 1.0 / n as f32;
        d.push(
            match m.loss.kl {
                KlKind::Mc => o.kl_mc_backward(
                    n,
                    m.latent,
                    scale,
                    &net.grads[z_id],
                    &net.bufs[enc_id],
                    &self.eps,
                    &net.bufs[z_id],
                    &net.grads[enc_id],
                )?,
                KlKind::Analytic => o.kl_analytic_backward(
                    n,
                    m.latent,
                    m.loss.kl_scale,
                    scale,
                    &net.grads[z_id],
                    &net.bufs[enc_id],
                    &self.eps,
                    &net.grads[enc_id],
                )?,
            }
            .labeled("latent"),
        );
        for (i, l) in m.encoder.iter().enumerate().rev() {
            let (xi, yi) = (net.enc[i], net.enc[i + 1]);
            // The first layer's input is the data: no gradient needed there.
            let dx = (xi != net.enc[0]).then(|| &net.grads[xi]);
            d.extend(self.layer_backward("encoder", l, n, &net.bufs[xi], &net.bufs[yi], &net.grads[yi], dx)?);
        }
        d.push(
            match self.opt {
                Optimizer::Adam { beta1, beta2, eps, .. } => o.adam_update(
                    m.num_params,
                    beta1,
                    beta2,
                    eps,
                    &self.params,
                    &self.grads,
                    &self.slots[0],
                    &self.slots[1],
                    &self.step_buf,
                )?,
                Optimizer::RmsProp { lr, rho, eps } => {
                    o.rmsprop_update(m.num_params, lr, rho, eps, &self.params, &self.grads, &self.slots[0])?
                }
            }
            .labeled("optimizer"),
        );
        Ok(d)
    }

    /// The test-set pass: the negative ELBO per batch, whatever weights the training
    /// loss puts on its terms (the Keras preset's are not the ELBO's): the summed
    /// cross-entropy plus the model's KL estimate (Monte Carlo, or closed form).
    fn build_eval(&self, n: usize) -> Result<Vec<Dispatch>> {
        let elbo = LossSpec { recon_scale: 1.0, kl: self.model.loss.kl, kl_scale: 0.5 };
        self.build_forward(n, Source::Test, elbo, &self.eval_losses)
    }

    /// The decoder alone on the fixed latent vectors; the logits land in the decoder's last buffer.
    fn build_decode(&self, n: usize) -> Result<Vec<Dispatch>> {
        let net = &self.net;
        let mut d = Vec::new();
        for (i, l) in self.model.decoder.iter().enumerate() {
            let x = if i == 0 { &self.fixed_z } else { &net.bufs[net.dec[i]] };
            d.extend(self.layer_forward("decoder", l, n, x, &net.bufs[net.dec[i + 1]])?);
        }
        Ok(d)
    }

    /// Encoder forward on the images `x` ([n, pixels], already preprocessed), in
    /// chunks the buffers hold. Returns [n, 2 * latent]: mean, then log-variance.
    pub fn encode(&mut self, x: &[f32]) -> Result<Vec<f32>> {
        let pixels = self.model.image.len();
        let width = 2 * self.model.latent;
        let mut out = Vec::with_capacity(x.len() / pixels * width);
        for chunk in x.chunks(self.cap * pixels) {
            let n = chunk.len() / pixels;
            self.gpu.queue.write_buffer(&self.net.bufs[self.net.enc[0]], 0, bytemuck::cast_slice(chunk));
            let mut d = Vec::new();
            for (i, l) in self.model.encoder.iter().enumerate() {
                d.extend(self.layer_forward("encoder", l, n, &self.net.bufs[self.net.enc[i]], &self.net.bufs[self.net.enc[i + 1]])?);
            }
            self.submit(&d)?;
            let mut e: Vec<f32> = self.gpu.read(&self.net.bufs[*self.net.enc.last().expect("encoder")])?;
            e.truncate(n * width);
            out.extend(e);
        }
        Ok(out)
    }

    /// Decoder forward on latent vectors `z` ([n, latent]); returns pixel probabilities [n, pixels].
    pub fn decode(&mut self, z: &[f32]) -> Result<Vec<f32>> {
        let latent = self.model.latent;
        let pixels = self.model.image.len();
        let mut out = Vec::with_capacity(z.len() / latent * pixels);
        for chunk in z.chunks(self.cap * latent) {
            let n = chunk.len() / latent;
            self.gpu.queue.write_buffer(&self.net.bufs[self.net.dec[0]], 0, bytemuck::cast_slice(chunk));
            let mut d = Vec::new();
            for (i, l) in self.model.decoder.iter().enumerate() {
                d.extend(self.layer_forward("decoder", l, n, &self.net.bufs[self.net.dec[i]], &self.net.bufs[self.net.dec[i + 1]])?);
            }
            self.submit(&d)?;
            let mut p: Vec<f32> = self.gpu.read(&self.net.bufs[*self.net.dec.last().expect("decoder")])?;
            p.truncate(n * pixels);
            out.extend(p.into_iter().map(crate::cpu::loss::sigmoid));
        }
        Ok(out)
    }

    /// One importance sample for up to `cap` images: z from q(z|x) with noise
    /// (EvalNoise stream, step `k`), then per image the summed cross-entropy
    /// (-log p(x|z)) and log q(z|x) - log p(z). Returns (ce, kl) per image.
    pub fn sample_terms(&mut self, x: &[f32], k: u32) -> Result<(Vec<f32>, Vec<f32>)> {
        let pixels = self.model.image.len();
        let n = x.len() / pixels;
        if n > self.cap {
            bail!("sample_terms takes at most {} images at once, got {n}", self.cap);
        }
        let o = self.ops();
        let m = self.model;
        let net = &self.net;
        self.gpu.queue.write_buffer(&net.bufs[net.enc[0]], 0, bytemuck::cast_slice(x));
        self.gpu.queue.write_buffer(&self.eval_step_buf, 0, bytemuck::bytes_of(&StepUniform { step: k, ..Default::default() }));
        let mut d = Vec::new();
        for (i, l) in m.encoder.iter().enumerate() {
            d.extend(self.layer_forward("encoder", l, n, &net.bufs[net.enc[i]], &net.bufs[net.enc[i + 1]])?);
        }
        let enc_out = &net.bufs[*net.enc.last().expect("encoder")];
        let z = &net.bufs[net.dec[0]];
        d.push(o.reparameterize(n, m.latent, self.rng.key(Stream::EvalNoise), enc_out, &self.eval_step_buf, z, &self.eps)?);
        for (i, l) in m.decoder.iter().enumerate() {
            d.extend(self.layer_forward("decoder", l, n, &net.bufs[net.dec[i]], &net.bufs[net.dec[i + 1]])?);
        }
        let logits = &net.bufs[*net.dec.last().expect("decoder")];
        d.push(o.sigmoid_cross_entropy_forward(n, pixels, logits, &net.bufs[net.enc[0]], &self.ce)?);
        d.push(o.kl_mc_forward(n, m.latent, enc_out, z, &self.kl)?);
        self.submit(&d)?;
        let mut ce: Vec<f32> = self.gpu.read(&self.ce)?;
        let mut kl: Vec<f32> = self.gpu.read(&self.kl)?;
        ce.truncate(n);
        kl.truncate(n);
        Ok((ce, kl))
    }

    /// Submit one of this trainer's dispatch lists.
    fn submit_list(&mut self, list: List) -> Result<()> {
        let dispatches = match list {
            List::TrainFull => &self.train_full,
            List::TrainTail => &self.train_tail,
            List::EvalFull => &self.eval_full,
            List::EvalTail => &self.eval_tail,
            List::DecodeFixed => &self.decode_fixed,
        };
        let cmd = self.kernels.encode(self.gpu, dispatches)?;
        self.submit_cmd(cmd)
    }

    /// Submit dispatches built for one call (inspection commands).
    fn submit(&mut self, dispatches: &[Dispatch]) -> Result<()> {
        let cmd = self.kernels.encode(self.gpu, dispatches)?;
        self.submit_cmd(cmd)
    }

    fn submit_cmd(&mut self, cmd: wgpu::CommandBuffer) -> Result<()> {
        // A lost device or a validation error stops the run here, not at the epoch's end.
        self.gpu.check()?;
        let t_submit = std::time::Instant::now();
        let idx = self.gpu.queue.submit([cmd]);
        self.submit_seconds += t_submit.elapsed().as_secs_f64();
        self.in_flight.push_back(idx);
        // Flow control, not a read-back: wait only for a submission several steps old.
        while self.in_flight.len() > IN_FLIGHT {
            let oldest = self.in_flight.pop_front().expect("non-empty");
            let t = std::time::Instant::now();
            self.gpu
                .device
                .poll(wgpu::PollType::Wait { submission_index: Some(oldest), timeout: None })
                .map_err(|e| anyhow::anyhow!("the GPU stopped responding: {e}"))?;
            self.wait_seconds += t.elapsed().as_secs_f64();
        }
        Ok(())
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.train_len.div_ceil(self.batch)
    }

    /// Start an epoch: upload its shuffled order (a pure function of seed and epoch).
    pub fn begin_epoch(&mut self, epoch: u32) {
        let order = self.rng.permutation(epoch, self.train_len);
        self.gpu.queue.write_buffer(&self.train_order, 0, bytemuck::cast_slice(&order));
    }

    /// Write the per-step uniform of training step `j` of the epoch.
    fn write_train_step(&self, j: usize) {
        let alpha = match self.opt {
            Optimizer::Adam { lr, beta1, beta2, .. } => adam_alpha(lr, beta1, beta2, self.step + 1),
            Optimizer::RmsProp { .. } => 0.0,
        };
        let s = StepUniform { step: self.step as u32, batch_start: (j * self.batch) as u32, loss_slot: j as u32, alpha };
        self.gpu.queue.write_buffer(&self.step_buf, 0, bytemuck::bytes_of(&s));
    }

    /// Queue training step `j` of the epoch (batch j of the shuffled order). Returns its batch size.
    pub fn train_step(&mut self, j: usize) -> Result<usize> {
        let n = self.batch.min(self.train_len - j * self.batch);
        self.write_train_step(j);
        self.submit_list(if n == self.batch { List::TrainFull } else { List::TrainTail })?;
        self.step += 1;
        Ok(n)
    }

    /// The batch losses of the epoch so far (blocking read, once per epoch).
    pub fn read_train_losses(&self, steps: usize) -> Result<Vec<f32>> {
        let mut v: Vec<f32> = self.gpu.read(&self.train_losses)?;
        v.truncate(steps);
        Ok(v)
    }

    /// The mean negative ELBO over the whole test set, with the evaluation noise of `epoch`
    /// (stream EvalNoise, step epoch * batches + j for batch j). Blocking.
    pub fn evaluate(&mut self, epoch: u32) -> Result<f64> {
        let batches = self.test_len.div_ceil(self.batch);
        for j in 0..batches {
            let start = j * self.batch;
            let s = StepUniform { step: epoch * batches as u32 + j as u32, batch_start: start as u32, loss_slot: j as u32, alpha: 0.0 };
            self.gpu.queue.write_buffer(&self.eval_step_buf, 0, bytemuck::bytes_of(&s));
            self.submit_list(if self.test_len - start >= self.batch { List::EvalFull } else { List::EvalTail })?;
        }
        let mut losses: Vec<f32> = self.gpu.read(&self.eval_losses)?;
        losses.truncate(batches);
        Ok(batch_weighted_mean(&losses, self.test_len, self.batch))
    }

    /// Decode the fixed latent vectors; returns their pixel probabilities [count, pixels].
    pub fn decode_fixed(&mut self) -> Result<Vec<f32>> {
        self.submit_list(List::DecodeFixed)?;
        let logits_id = *self.net.dec.last().expect("decoder");
        let mut v: Vec<f32> = self.gpu.read(&self.net.bufs[logits_id])?;
        v.truncate(self.fixed_count * self.model.image.len());
        Ok(v.into_iter().map(crate::cpu::loss::sigmoid).collect())
    }

    /// Parameters and optimizer state, read back (blocking: checkpoints and tests).
    pub fn read_state(&self) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let n = self.model.num_params;
        let mut p: Vec<f32> = self.gpu.read(&self.params)?;
        p.truncate(n);
        let mut slots = Vec::new();
        for s in &self.slots {
            let mut v: Vec<f32> = self.gpu.read(s)?;
            v.truncate(n);
            slots.push(v);
        }
        Ok((p, slots))
    }

    /// Restore parameters, optimizer state and the step count (resume).
    pub fn write_state(&mut self, params: &[f32], slots: &[Vec<f32>], step: u64) -> Result<()> {
        if params.len() != self.model.num_params || slots.len() != self.slots.len() || slots.iter().any(|s| s.len() != params.len()) {
            bail!("the saved state does not fit the model ({} parameters, {} optimizer slots)", self.model.num_params, self.slots.len());
        }
        self.gpu.queue.write_buffer(&self.params, 0, bytemuck::cast_slice(params));
        for (b, s) in self.slots.iter().zip(slots) {
            self.gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(s));
        }
        self.step = step;
        Ok(())
    }

    /// The gradient of the last step (tests).
    pub fn read_grads(&self) -> Result<Vec<f32>> {
        let mut g: Vec<f32> = self.gpu.read(&self.grads)?;
        g.truncate(self.model.num_params);
        Ok(g)
    }

    /// Time every dispatch of one training step (step `j` of the current epoch) with
    /// timestamp queries; None without `TIMESTAMP_QUERY`. Advances the training state.
    pub fn profile_train_step(&mut self, j: usize) -> Result<Option<Vec<KernelTime>>> {
        self.finish()?;
        self.write_train_step(j);
        let times = super::kernels::profile(self.gpu, self.kernels, &self.train_full)?;
        self.step += 1;
        Ok(times.map(|t| {
            self.train_full
                .iter()
                .zip(t)
                .map(|(d, ns)| KernelTime { entry: d.entry.clone(), label: d.label.clone(), flops: d.flops, ns })
                .collect()
        }))
    }

    /// Counted floating-point work of one full training step.
    pub fn train_dispatch_flops(&self) -> f64 {
        self.train_full.iter().map(|d| d.flops).sum()
    }

    /// Wait for all queued work.
    pub fn finish(&mut self) -> Result<()> {
        self.in_flight.clear();
        self.gpu.wait()
    }
}

/// The prebuilt dispatch lists.
#[derive(Clone, Copy)]
enum List {
    TrainFull,
    TrainTail,
    EvalFull,
    EvalTail,
    DecodeFixed,
}

/// The mean over examples of per-batch mean losses, when every batch holds `batch`
/// examples but the last, which holds the rest of `total`.
pub fn batch_weighted_mean(losses: &[f32], total: usize, batch: usize) -> f64 {
    losses.iter().enumerate().map(|(j, &l)| l as f64 * batch.min(total - j * batch) as f64).sum::<f64>() / total as f64
}

/// One op's measured time within a training step.
pub struct KernelTime {
    pub entry: String,
    pub label: String,
    pub flops: f64,
    pub ns: f64,
}

/// Check, before any dispatch, that every buffer and grid fits the device's limits.
fn check_limits(gpu: &Gpu, model: &Model, cap: usize, train: &Split) -> Result<()> {
    let max_binding = gpu.limits.max_storage_buffer_binding_size;
    let mut largest = ("the packed training images", train.images.len().div_ceil(4) as u64 * 4);
    for l in model.layers() {
        let bytes = (cap * l.output.len() * 4) as u64;
        if bytes > largest.1 {
            largest = ("a layer's activations", bytes);
        }
    }
    if largest.1 > max_binding {
        bail!("{} need {} bytes at batch {cap}, over the device's max_storage_buffer_binding_size of {max_binding}; use a smaller --batch-size or --train-size", largest.0, largest.1);
    }
    // Every index a shader computes must fit in u32.
    if (cap as u64) * (model.image.len() as u64) >= u32::MAX as u64 / 4 || train.images.len() as u64 >= u32::MAX as u64 {
        bail!("batch {cap} is too large for 32-bit indexing");
    }
    // Workgroup grids: at most 65535 x 65535 workgroups of 64.
    let max_threads = 65535u64 * 65535 * 64;
    for l in model.layers() {
        if (cap * l.output.len()) as u64 > max_threads {
            bail!("batch {cap} needs more workgroups than max_compute_workgroups_per_dimension allows");
        }
    }
    Ok(())
}
