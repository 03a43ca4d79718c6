//! Training on the GPU: the optimizer state, the data sets uploaded once, the
//! per-step uniform, and flow control, around a `Network`. Its step reads like
//! `cpu::vae::train_step`: gather the batch, `Network::forward`, `Network::backward`,
//! the optimizer.
//!
//! Per step the host writes one small uniform (step number, batch start, loss slot,
//! Adam's step size) and submits a dispatch list built once. Nothing is read back
//! inside the batch loop: each batch's loss goes to its own slot of a GPU buffer
//! that is read once per epoch.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::{bail, Result};

use super::kernels::{Dispatch, Kernels};
use super::network::{Network, Noise};
use super::ops::{Ops, Packs, StepUniform, Variant};
use super::plan::Plan;
use super::Gpu;
use crate::data::Split;
use crate::math::{adam_alpha, sigmoid};
use crate::model::{LossSpec, Model, Optimizer};
use crate::rng::{Rng, Stream};

/// How many submissions may be queued before the host waits for the oldest:
/// enough to keep the device busy, few enough to bound queued memory.
const IN_FLIGHT: usize = 3;

/// What a `Trainer` is built from: the model it keeps (`'m`) and data it uploads (`'d`).
pub struct TrainerSpec<'m, 'd> {
    pub model: &'m Model,
    pub optimizer: Optimizer,
    pub batch: usize,
    /// Fixes the shuffles and the noise (`Rng`).
    pub seed: u64,
    pub binarize: bool,
    pub train: &'d Split,
    pub test: &'d Split,
    /// The initial parameters (flat layout).
    pub params: &'d [f32],
    /// The latent vectors of the sample grids ([count, latent]); may be empty.
    pub fixed_z: &'d [f32],
    /// Which kernel family runs each op of each layer (`plan::choose`).
    pub plan: Plan,
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

/// Submissions in flight, and where the host's time went (for the benchmark).
#[derive(Default)]
struct Flow {
    in_flight: VecDeque<wgpu::SubmissionIndex>,
    /// Time the host spent waiting for the device.
    wait_seconds: f64,
    /// Time spent inside `queue.submit` (some drivers do the work there).
    submit_seconds: f64,
}

/// One op's measured time within a training step.
pub struct KernelTime {
    pub entry: String,
    pub label: String,
    pub flops: f64,
    pub ns: f64,
}

pub struct Trainer<'a> {
    gpu: &'a Gpu,
    kernels: &'a Kernels,
    net: Network<'a>,
    opt: Optimizer,
    batch: usize,
    rng: Rng,
    binarize: bool,
    grads: wgpu::Buffer,
    /// Optimizer state: Adam's m and v, or RMSprop's v.
    slots: Vec<wgpu::Buffer>,
    train_images: wgpu::Buffer,
    train_order: wgpu::Buffer,
    test_images: wgpu::Buffer,
    test_order: wgpu::Buffer,
    train_len: usize,
    test_len: usize,
    step_buf: wgpu::Buffer,
    eval_step_buf: wgpu::Buffer,
    train_losses: wgpu::Buffer,
    eval_losses: wgpu::Buffer,
    fixed_z: Vec<f32>,
    lists: [Vec<Dispatch>; 5],
    /// Training steps done so far (the noise counter and Adam's t).
    step: u64,
    flow: Flow,
}

impl<'a> Trainer<'a> {
    /// Upload the data and the initial state, and build every dispatch list.
    pub fn new(gpu: &'a Gpu, kernels: &'a Kernels, spec: TrainerSpec<'a, '_>) -> Result<Trainer<'a>> {
        let TrainerSpec { model, optimizer, batch, seed, binarize, train, test, params, fixed_z, plan } = spec;
        if batch == 0 {
            bail!("the batch size must be at least 1");
        }
        if train.is_empty() || test.is_empty() {
            bail!("the training and test sets must each hold at least one image (got {} and {})", train.len(), test.len());
        }
        let fixed_count = fixed_z.len() / model.latent;
        let cap = batch.max(fixed_count);
        check_limits(gpu, model, cap, train)?;
        let ops = Ops { gpu, k: kernels, variant: Variant::Auto, packs: None };
        let identity: Vec<u32> = (0..test.len() as u32).collect();
        let mut t = Trainer {
            gpu,
            kernels,
            net: Network::new(ops, plan, model, params, cap, true)?,
            opt: optimizer,
            batch,
            rng: Rng::new(seed),
            binarize,
            grads: gpu.zeros("grads", model.num_params),
            slots: (0..optimizer.state_slots()).map(|i| gpu.zeros(&format!("optimizer slot {i}"), model.num_params)).collect(),
            train_images: gpu.upload_bytes("train images", &train.images),
            train_order: gpu.zeros("train order", train.len()),
            test_images: gpu.upload_bytes("test images", &test.images),
            test_order: gpu.upload("test order", &identity),
            train_len: train.len(),
            test_len: test.len(),
            step_buf: gpu.uniform("step", &StepUniform::default()),
            eval_step_buf: gpu.uniform("eval step", &StepUniform::default()),
            train_losses: gpu.zeros("train losses", train.len().div_ceil(batch)),
            eval_losses: gpu.zeros("eval losses", test.len().div_ceil(batch)),
            fixed_z: fixed_z.to_vec(),
            lists: Default::default(),
            step: 0,
            flow: Flow::default(),
        };
        let (train_tail, test_tail) = (train.len() % batch, test.len() % batch);
        t.lists = [
            t.build_train(batch)?,
            if train_tail > 0 { t.build_train(train_tail)? } else { Vec::new() },
            t.build_eval(batch)?,
            if test_tail > 0 { t.build_eval(test_tail)? } else { Vec::new() },
            if fixed_count > 0 { t.net.decode(fixed_count, &Packs::default())? } else { Vec::new() },
        ];
        // Every pipeline of every list at once, in parallel: the start-up's largest part.
        t.kernels.prepare(t.gpu, t.lists.iter().flatten())?;
        Ok(t)
    }

    pub fn model(&self) -> &'a Model {
        self.net.model()
    }
    /// Training steps done so far.
    pub fn step(&self) -> u64 {
        self.step
    }
    /// Seconds the host spent waiting for the device, and inside `queue.submit`.
    pub fn host_timing(&self) -> (f64, f64) {
        (self.flow.wait_seconds, self.flow.submit_seconds)
    }
    pub fn steps_per_epoch(&self) -> usize {
        self.train_len.div_ceil(self.batch)
    }

    /// The batch of `n` from `images` in the order of `order`, from `step.batch_start`.
    fn gather(&self, n: usize, images: &wgpu::Buffer, order: &wgpu::Buffer, step: &wgpu::Buffer) -> Result<Dispatch> {
        let pixels = self.model().image.len();
        let d = self.net.ops().gather_images(n, pixels, self.binarize, images, order, step, self.net.input())?;
        Ok(d.labeled("data"))
    }

    /// One training step on a batch of `n`: the batch, forward, backward, optimizer.
    fn build_train(&self, n: usize) -> Result<Vec<Dispatch>> {
        let m = self.model();
        let noise = Noise { key: self.rng.key(Stream::Noise), step: &self.step_buf, by_image: false };
        let mut d = vec![self.gather(n, &self.train_images, &self.train_order, &self.step_buf)?];
        // The backward pass reads the forward's packed activations.
        let packs = Packs::default();
        d.extend(self.net.forward(n, noise, m.loss, &self.train_losses, &packs)?);
        d.extend(self.net.backward(n, &self.grads, &packs)?);
        let (o, params) = (self.net.ops(), self.net.params());
        let update = match self.opt {
            Optimizer::Adam { beta1, beta2, eps, .. } => {
                o.adam_update(m.num_params, beta1, beta2, eps, params, &self.grads, &self.slots[0], &self.slots[1], &self.step_buf)?
            }
            Optimizer::RmsProp { lr, rho, eps } => o.rmsprop_update(m.num_params, lr, rho, eps, params, &self.grads, &self.slots[0])?,
        };
        d.push(update.labeled("optimizer"));
        Ok(d)
    }

    /// The test-set pass: the negative ELBO per batch, whatever weights the training
    /// loss puts on its terms (the Keras preset's are not the ELBO's): the summed
    /// cross-entropy plus the model's KL estimate (Monte Carlo, or closed form).
    fn build_eval(&self, n: usize) -> Result<Vec<Dispatch>> {
        let elbo = LossSpec { recon_scale: 1.0, kl: self.model().loss.kl, kl_scale: 0.5 };
        let noise = Noise { key: self.rng.key(Stream::EvalNoise), step: &self.eval_step_buf, by_image: false };
        let mut d = vec![self.gather(n, &self.test_images, &self.test_order, &self.eval_step_buf)?];
        d.extend(self.net.forward(n, noise, elbo, &self.eval_losses, &Packs::default())?);
        Ok(d)
    }

    /// Submit one of the prebuilt dispatch lists.
    fn submit_list(&mut self, list: List) -> Result<()> {
        let cmd = self.kernels.encode(self.gpu, &self.lists[list as usize])?;
        self.gpu.check()?;
        let t_submit = Instant::now();
        let idx = self.gpu.queue.submit([cmd]);
        self.flow.submit_seconds += t_submit.elapsed().as_secs_f64();
        self.flow.in_flight.push_back(idx);
        // Flow control, not a read-back: wait only for a submission several steps old.
        while self.flow.in_flight.len() > IN_FLIGHT {
            let oldest = self.flow.in_flight.pop_front().expect("non-empty");
            let t = Instant::now();
            self.gpu
                .device
                .poll(wgpu::PollType::Wait { submission_index: Some(oldest), timeout: None })
                .map_err(|e| anyhow::anyhow!("the GPU stopped responding: {e}"))?;
            self.flow.wait_seconds += t.elapsed().as_secs_f64();
        }
        Ok(())
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
        // The write lands between the submissions before it and the decode.
        self.gpu.queue.write_buffer(self.net.latent(), 0, bytemuck::cast_slice(&self.fixed_z));
        self.submit_list(List::DecodeFixed)?;
        let mut v: Vec<f32> = self.gpu.read(self.net.logits())?;
        v.truncate(self.fixed_z.len() / self.model().latent * self.model().image.len());
        Ok(v.into_iter().map(sigmoid).collect())
    }

    /// Parameters and optimizer state, read back (blocking: checkpoints and tests).
    pub fn read_state(&self) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let n = self.model().num_params;
        let read = |b: &wgpu::Buffer| -> Result<Vec<f32>> {
            let mut v: Vec<f32> = self.gpu.read(b)?;
            v.truncate(n);
            Ok(v)
        };
        Ok((read(self.net.params())?, self.slots.iter().map(read).collect::<Result<_>>()?))
    }

    /// Restore parameters, optimizer state and the step count (resume).
    pub fn write_state(&mut self, params: &[f32], slots: &[Vec<f32>], step: u64) -> Result<()> {
        let n = self.model().num_params;
        if params.len() != n || slots.len() != self.slots.len() || slots.iter().any(|s| s.len() != n) {
            bail!("the saved state does not fit the model ({n} parameters, {} optimizer slots)", self.slots.len());
        }
        self.gpu.queue.write_buffer(self.net.params(), 0, bytemuck::cast_slice(params));
        for (b, s) in self.slots.iter().zip(slots) {
            self.gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(s));
        }
        self.step = step;
        Ok(())
    }

    /// The gradient of the last step (tests).
    pub fn read_grads(&self) -> Result<Vec<f32>> {
        let mut g: Vec<f32> = self.gpu.read(&self.grads)?;
        g.truncate(self.model().num_params);
        Ok(g)
    }

    /// Time every dispatch of one training step (step `j` of the current epoch), and
    /// say how (`kernels::profile_checked`). Advances the training state.
    pub fn profile_train_step(&mut self, j: usize) -> Result<(Vec<KernelTime>, &'static str)> {
        self.finish()?;
        self.write_train_step(j);
        let list = &self.lists[List::TrainFull as usize];
        let (times, how) = super::kernels::profile_checked(self.gpu, self.kernels, list)?;
        self.step += 1;
        let rows = list.iter().zip(times).map(|(d, ns)| KernelTime { entry: d.entry.clone(), label: d.label.clone(), flops: d.flops, ns });
        Ok((rows.collect(), how))
    }

    /// Counted floating-point work of one full training step.
    pub fn train_dispatch_flops(&self) -> f64 {
        self.lists[List::TrainFull as usize].iter().map(|d| d.flops).sum()
    }

    /// Wait for all queued work.
    pub fn finish(&mut self) -> Result<()> {
        self.flow.in_flight.clear();
        self.gpu.wait()
    }
}

/// The mean over examples of per-batch mean losses, when every batch holds `batch`
/// examples but the last, which holds the rest of `total`.
pub fn batch_weighted_mean(losses: &[f32], total: usize, batch: usize) -> f64 {
    losses.iter().enumerate().map(|(j, &l)| l as f64 * batch.min(total - j * batch) as f64).sum::<f64>() / total as f64
}

/// Check, before any dispatch, that every buffer and grid fits the device's limits.
pub fn check_limits(gpu: &Gpu, model: &Model, cap: usize, train: &Split) -> Result<()> {
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
    // Workgroup grids: at most 65535 x 65535 workgroups.
    let max_threads = 65535u64 * 65535 * super::kernels::WORKGROUP as u64;
    for l in model.layers() {
        if (cap * l.output.len()) as u64 > max_threads {
            bail!("batch {cap} needs more workgroups than max_compute_workgroups_per_dimension allows");
        }
    }
    Ok(())
}
