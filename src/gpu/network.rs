//! The VAE on the GPU, read beside `src/cpu/vae.rs`: the same functions, in the same
//! order, returning dispatch lists instead of computing. `Network` owns the weights it
//! computes with and every activation (and, for training, activation-gradient) buffer;
//! `Trainer` and `Runner` build their step lists from these passes.
//!
//! | `cpu::vae`       | `Network`                                                   |
//! |------------------|-------------------------------------------------------------|
//! | `layer_forward`  | `layer_forward`                                             |
//! | `layer_backward` | `layer_backward`                                            |
//! | `encode`         | `encode`: `input()` through the encoder to `enc_out()`       |
//! | `decode`         | `decode`: `latent()` through the decoder to `logits()`       |
//! | `forward`        | `forward`: encode, `reparameterize`, decode, `loss_terms`, `loss_reduce` |
//! | `backward`       | `backward`: into a gradient buffer in the flat layout       |

use anyhow::{bail, Result};

use super::kernels::Dispatch;
use super::ops::{Ops, Packs, Variant, Weights};
use super::plan::{Op, Plan};
use crate::model::{Activation, KlKind, Layer, LayerInfo, LossSpec, Model};

/// Where a pass's noise comes from: a stream's key (`Rng::key`) and the step
/// uniform whose `step` field is the counter; the noise of a row is indexed by the
/// row, or with `by_image` by its image (`step.batch_start` + row: `cvae eval`).
#[derive(Clone, Copy)]
pub struct Noise<'b> {
    pub key: [u32; 2],
    pub step: &'b wgpu::Buffer,
    pub by_image: bool,
}

pub struct Network<'a> {
    ops: Ops<'a>,
    /// Which kernel family runs each op of each layer.
    plan: Plan,
    model: &'a Model,
    /// The largest batch the buffers hold.
    cap: usize,
    params: wgpu::Buffer,
    /// One buffer per distinct tensor (Flatten and Reshape alias their input), and
    /// its gradient when the network trains.
    acts: Vec<wgpu::Buffer>,
    d_acts: Vec<wgpu::Buffer>,
    /// enc[0] is the input x; enc[i + 1] the output of encoder layer i.
    enc: Vec<usize>,
    /// dec[0] is z; dec[i + 1] the output of decoder layer i (the last is the logits).
    dec: Vec<usize>,
    eps: wgpu::Buffer,
    ce: wgpu::Buffer,
    kl: wgpu::Buffer,
}

impl<'a> Network<'a> {
    /// Buffers for batches of up to `cap`, holding the weights `params`; with
    /// `gradients`, also a gradient buffer per activation (for `backward`). The layers'
    /// ops run the families of `plan`.
    pub fn new(ops: Ops<'a>, plan: Plan, model: &'a Model, params: &[f32], cap: usize, gradients: bool) -> Result<Network<'a>> {
        if params.len() != model.num_params {
            bail!("{} parameters given for a model of {}", params.len(), model.num_params);
        }
        let gpu = ops.gpu;
        let (mut acts, mut d_acts) = (Vec::new(), Vec::new());
        let mut alloc = |label: &str, per_example: usize| {
            acts.push(gpu.zeros(label, cap * per_example));
            if gradients {
                d_acts.push(gpu.zeros(&format!("d_{label}"), cap * per_example));
            }
            acts.len() - 1
        };
        let mut chain = |net: &str, first: (&str, usize), layers: &[LayerInfo]| {
            let mut ids = vec![alloc(first.0, first.1)];
            for l in layers {
                let id = match l.layer {
                    Layer::Flatten | Layer::Reshape { .. } => *ids.last().expect("input"),
                    _ => alloc(&format!("{net}.{}", l.name), l.output.len()),
                };
                ids.push(id);
            }
            ids
        };
        let enc = chain("encoder", ("x", model.image.len()), &model.encoder);
        let dec = chain("decoder", ("z", model.latent), &model.decoder);
        Ok(Network {
            ops,
            plan: plan.for_device(gpu),
            model,
            cap,
            params: gpu.upload("params", params),
            acts,
            d_acts,
            enc,
            dec,
            eps: gpu.zeros("eps", cap * model.latent),
            ce: gpu.zeros("ce", cap),
            kl: gpu.zeros("kl", cap),
        })
    }

    pub fn ops(&self) -> Ops<'a> {
        self.ops
    }
    pub fn model(&self) -> &'a Model {
        self.model
    }
    pub fn cap(&self) -> usize {
        self.cap
    }
    /// The weights, in the flat layout of `Model::params`.
    pub fn params(&self) -> &wgpu::Buffer {
        &self.params
    }
    /// The images [n, pixels] the encoder reads.
    pub fn input(&self) -> &wgpu::Buffer {
        &self.acts[self.enc[0]]
    }
    /// The encoder's output [n, 2 * latent]: mean, then log-variance.
    pub fn enc_out(&self) -> &wgpu::Buffer {
        &self.acts[*self.enc.last().expect("encoder")]
    }
    /// The latent vectors [n, latent] the decoder reads.
    pub fn latent(&self) -> &wgpu::Buffer {
        &self.acts[self.dec[0]]
    }
    /// The decoder's output [n, pixels], before the sigmoid.
    pub fn logits(&self) -> &wgpu::Buffer {
        &self.acts[*self.dec.last().expect("decoder")]
    }
    /// Per example: the summed cross-entropy, and the KL term.
    pub fn ce(&self) -> &wgpu::Buffer {
        &self.ce
    }
    pub fn kl(&self) -> &wgpu::Buffer {
        &self.kl
    }

    /// The launchers for op `op` of the layer labelled `label`, with the plan's family,
    /// sharing the list's packed textures `packs`.
    fn ops_for<'p>(&'p self, label: &str, op: Op, packs: &'p Packs) -> Ops<'p> {
        Ops { variant: self.plan.variant(label, op), packs: Some(packs), ..self.ops }
    }

    fn weights<'b>(&self, buf: &'b wgpu::Buffer, l: &LayerInfo) -> Weights<'b> {
        let k = l.kernel_param.expect("layer with weights");
        Weights { params: buf, w_off: self.model.params[k].offset, b_off: self.model.params[k + 1].offset }
    }

    /// One layer forward, bias and activation fused; None for Flatten and Reshape.
    pub fn layer_forward(
        &self,
        net: &str,
        l: &LayerInfo,
        n: usize,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        packs: &Packs,
    ) -> Result<Option<Dispatch>> {
        let relu = l.activation() == Activation::Relu;
        if matches!(l.layer, Layer::Flatten | Layer::Reshape { .. }) {
            return Ok(None);
        }
        let label = format!("{net}.{}", l.name);
        let o = self.ops_for(&label, Op::Forward, packs);
        let w = self.weights(&self.params, l);
        let d = match l.layer {
            Layer::Conv2D { .. } => o.conv2d_forward(&l.conv_geom(n).expect("conv"), x, w, relu, y)?,
            Layer::Conv2DTranspose { .. } => o.conv2d_transpose_forward(&l.conv_geom(n).expect("conv"), x, w, relu, y)?,
            Layer::Dense { units, .. } => o.dense_forward(n, l.input.len(), units, x, w, relu, y)?,
            Layer::Flatten | Layer::Reshape { .. } => unreachable!("returned above"),
        };
        Ok(Some(d.labeled(&label)))
    }

    /// Backward through one layer: the ReLU mask (in place on dy), the kernel and bias
    /// gradients into `grads`, and dx when asked.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_backward(
        &self,
        net: &str,
        l: &LayerInfo,
        n: usize,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        dx: Option<&wgpu::Buffer>,
        packs: &Packs,
    ) -> Result<Vec<Dispatch>> {
        let o = self.ops;
        let mut d = Vec::new();
        if matches!(l.layer, Layer::Flatten | Layer::Reshape { .. }) {
            return Ok(d);
        }
        let label = format!("{net}.{}", l.name);
        let (ok, oi) = (self.ops_for(&label, Op::BackwardKernel, packs), self.ops_for(&label, Op::BackwardInput, packs));
        let (gw, w) = (self.weights(grads, l), self.weights(&self.params, l));
        // Where both gradient kernels are the subgroup family's, they read dy through a
        // texture: the mask and the bias gradient come with packing it, one pass.
        let channels = l.output.channels();
        let rows = n * l.output.len() / channels;
        let subgroup = ok.variant == Variant::Subgroup && (dx.is_none() || oi.variant == Variant::Subgroup);
        let relu = l.activation() == Activation::Relu;
        let fused = if relu && subgroup { ok.relu_bias_backward_subgroup(rows, channels, y, dy, grads, gw.b_off)? } else { None };
        let bias_done = fused.is_some();
        match fused {
            Some(f) => d.push(f),
            None if relu => d.push(o.relu_backward(n * l.output.len(), y, dy)?),
            None => {}
        }
        match l.layer {
            Layer::Conv2D { .. } => {
                let g = l.conv_geom(n).expect("conv");
                d.push(ok.conv2d_backward_kernel(&g, x, dy, gw)?);
                if !bias_done {
                    d.push(o.bias_backward(n * g.out_h * g.out_w, g.out_c, dy, grads, gw.b_off)?);
                }
                if let Some(dx) = dx {
                    d.push(oi.conv2d_backward_input(&g, dy, w, dx)?);
                }
            }
            Layer::Conv2DTranspose { .. } => {
                let g = l.conv_geom(n).expect("conv");
                d.push(ok.conv2d_transpose_backward_kernel(&g, x, dy, gw)?);
                if !bias_done {
                    d.push(o.bias_backward(n * g.out_h * g.out_w, g.out_c, dy, grads, gw.b_off)?);
                }
                if let Some(dx) = dx {
                    d.push(oi.conv2d_transpose_backward_input(&g, dy, w, dx)?);
                }
            }
            Layer::Dense { units, .. } => {
                let inputs = l.input.len();
                d.push(ok.dense_backward_kernel(n, inputs, units, x, dy, gw)?);
                if !bias_done {
                    d.push(o.bias_backward(n, units, dy, grads, gw.b_off)?);
                }
                if let Some(dx) = dx {
                    d.push(oi.dense_backward_input(n, inputs, units, dy, w, dx)?);
                }
            }
            Layer::Flatten | Layer::Reshape { .. } => unreachable!("returned above"),
        }
        Ok(d.into_iter().map(|x| x.labeled(&label)).collect())
    }

    /// The layers of one network, forward, over the activation chain `ids`.
    fn chain_forward(&self, net: &str, layers: &[LayerInfo], ids: &[usize], n: usize, packs: &Packs) -> Result<Vec<Dispatch>> {
        let mut d = Vec::new();
        for (i, l) in layers.iter().enumerate() {
            d.extend(self.layer_forward(net, l, n, &self.acts[ids[i]], &self.acts[ids[i + 1]], packs)?);
        }
        Ok(d)
    }

    /// The layers of one network, backward, from the gradient of its output; the
    /// gradient of the network's input only with `need_input_grad`.
    fn chain_backward(
        &self,
        net: &str,
        layers: &[LayerInfo],
        ids: &[usize],
        n: usize,
        grads: &wgpu::Buffer,
        need_input_grad: bool,
        packs: &Packs,
    ) -> Result<Vec<Dispatch>> {
        let (a, da) = (&self.acts, &self.d_acts);
        let mut d = Vec::new();
        for (i, l) in layers.iter().enumerate().rev() {
            let (xi, yi) = (ids[i], ids[i + 1]);
            let dx = (need_input_grad || xi != ids[0]).then(|| &da[xi]);
            d.extend(self.layer_backward(net, l, n, &a[xi], &a[yi], &da[yi], grads, dx, packs)?);
        }
        Ok(d)
    }

    /// `cpu::vae::encode`: `input()` through the encoder into `enc_out()`. `packs`:
    /// the textures shared within the dispatch list being built (one `Packs` a list).
    pub fn encode(&self, n: usize, packs: &Packs) -> Result<Vec<Dispatch>> {
        self.chain_forward("encoder", &self.model.encoder, &self.enc, n, packs)
    }

    /// `cpu::vae::decode`: `latent()` through the decoder into `logits()`.
    pub fn decode(&self, n: usize, packs: &Packs) -> Result<Vec<Dispatch>> {
        self.chain_forward("decoder", &self.model.decoder, &self.dec, n, packs)
    }

    /// z = mean + exp(logvar / 2) * eps into `latent()`, eps drawn on the GPU from `noise`.
    pub fn reparameterize(&self, n: usize, noise: Noise<'_>) -> Result<Dispatch> {
        let (o, latent) = (self.ops, self.model.latent);
        let d = o.reparameterize(n, latent, noise.key, self.enc_out(), noise.step, self.latent(), &self.eps, noise.by_image)?;
        Ok(d.labeled("latent"))
    }

    /// Per example: the summed cross-entropy of the logits against the input into
    /// `ce()`, and the KL term (`kl` kind, closed form scaled by `kl_scale`) into `kl()`.
    pub fn loss_terms(&self, n: usize, kl: KlKind, kl_scale: f32) -> Result<Vec<Dispatch>> {
        let (o, latent) = (self.ops, self.model.latent);
        let ce = o.sigmoid_cross_entropy_forward(n, self.model.image.len(), self.logits(), self.input(), &self.ce)?;
        let kl = match kl {
            KlKind::Mc => o.kl_mc_forward(n, latent, self.enc_out(), self.latent(), &self.kl)?,
            KlKind::Analytic => o.kl_analytic_forward(n, latent, kl_scale, self.enc_out(), &self.kl)?,
        };
        Ok(vec![ce.labeled("loss"), kl.labeled("latent")])
    }

    /// `cpu::vae::forward`: encode, reparameterize, decode, the loss terms of `loss`,
    /// and the batch loss into `losses[step.loss_slot]` (the step uniform of `noise`).
    pub fn forward(&self, n: usize, noise: Noise<'_>, loss: LossSpec, losses: &wgpu::Buffer, packs: &Packs) -> Result<Vec<Dispatch>> {
        let mut d = self.encode(n, packs)?;
        d.push(self.reparameterize(n, noise)?);
        d.extend(self.decode(n, packs)?);
        d.extend(self.loss_terms(n, loss.kl, loss.kl_scale)?);
        d.push(self.ops.loss_reduce(n, loss.recon_scale, &self.ce, &self.kl, losses, noise.step)?.labeled("loss"));
        Ok(d)
    }

    /// `cpu::vae::backward`: the gradient of the batch loss of the last `forward` (with
    /// the model's own loss) w.r.t. every parameter, into `grads` (flat layout).
    pub fn backward(&self, n: usize, grads: &wgpu::Buffer, packs: &Packs) -> Result<Vec<Dispatch>> {
        if self.d_acts.is_empty() {
            bail!("this network was built without gradient buffers");
        }
        let (o, m) = (self.ops, self.model);
        let (logits, z, enc) = (*self.dec.last().expect("decoder"), self.dec[0], *self.enc.last().expect("encoder"));
        let (a, da) = (&self.acts, &self.d_acts);
        let mut d = vec![o
            .sigmoid_cross_entropy_backward(n, m.image.len(), m.loss.recon_scale, &a[logits], self.input(), &da[logits])?
            .labeled("loss")];
        d.extend(self.chain_backward("decoder", &m.decoder, &self.dec, n, grads, true, packs)?);
        let scale = 1.0 / n as f32;
        let kl = match m.loss.kl {
            KlKind::Mc => o.kl_mc_backward(n, m.latent, scale, &da[z], &a[enc], &self.eps, &a[z], &da[enc])?,
            KlKind::Analytic => o.kl_analytic_backward(n, m.latent, m.loss.kl_scale, scale, &da[z], &a[enc], &self.eps, &da[enc])?,
        };
        d.push(kl.labeled("latent"));
        // The first layer's input is the data: no gradient needed there.
        d.extend(self.chain_backward("encoder", &m.encoder, &self.enc, n, grads, false, packs)?);
        Ok(d)
    }
}
