//! The whole VAE on the CPU: forward, loss, every parameter's gradient, one
//! optimizer step. The GPU scheduler runs the same sequence with the shaders.

use super::activation::{bias_backward, relu_backward};
use super::conv2d::{conv2d_backward_input, conv2d_backward_kernel, conv2d_forward};
use super::conv2d_transpose::{conv2d_transpose_backward_input, conv2d_transpose_backward_kernel, conv2d_transpose_forward};
use super::dense::{dense_backward_input, dense_backward_kernel, dense_forward};
use super::kl::{kl_analytic_backward, kl_analytic_forward, kl_mc_backward, kl_mc_forward};
use super::loss::{loss_reduce, sigmoid_cross_entropy_backward, sigmoid_cross_entropy_forward};
use super::optim::{adam_alpha, adam_update, rmsprop_update};
use super::reparam::reparameterize;
use crate::model::{Activation, KlKind, Layer, LayerInfo, Model, Optimizer};
use crate::rng::{Rng, Stream};

/// A layer's kernel and bias slices in the flat buffer.
fn weights<'a>(model: &Model, l: &LayerInfo, params: &'a [f32]) -> (&'a [f32], &'a [f32]) {
    let k = &model.params[l.kernel_param.expect("layer has weights")];
    let b = &model.params[l.kernel_param.expect("layer has weights") + 1];
    (&params[k.offset..k.offset + k.len], &params[b.offset..b.offset + b.len])
}

pub fn layer_forward(model: &Model, l: &LayerInfo, batch: usize, x: &[f32], params: &[f32]) -> Vec<f32> {
    match l.layer {
        Layer::Conv2D { activation, .. } => {
            let (k, b) = weights(model, l, params);
            conv2d_forward(&l.conv_geom(batch).expect("conv"), x, k, b, activation)
        }
        Layer::Conv2DTranspose { activation, .. } => {
            let (k, b) = weights(model, l, params);
            conv2d_transpose_forward(&l.conv_geom(batch).expect("conv"), x, k, b, activation)
        }
        Layer::Dense { activation, .. } => {
            let (k, b) = weights(model, l, params);
            dense_forward(x, k, b, l.input.len(), activation)
        }
        Layer::Flatten | Layer::Reshape { .. } => x.to_vec(),
    }
}

/// Backward through one layer: adds its weight gradients into `grads` and returns
/// the gradient w.r.t. its input (None when `need_dx` is false).
pub fn layer_backward(
    model: &Model,
    l: &LayerInfo,
    batch: usize,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    params: &[f32],
    grads: &mut [f32],
    need_dx: bool,
) -> Option<Vec<f32>> {
    if matches!(l.layer, Layer::Flatten | Layer::Reshape { .. }) {
        return need_dx.then(|| dy.to_vec());
    }
    let dy = if l.activation() == Activation::Relu { relu_backward(dy, y) } else { dy.to_vec() };
    let (k, _) = weights(model, l, params);
    let (dk, dx) = match l.layer {
        Layer::Conv2D { .. } => {
            let g = l.conv_geom(batch).expect("conv");
            (conv2d_backward_kernel(&g, x, &dy), need_dx.then(|| conv2d_backward_input(&g, &dy, k)))
        }
        Layer::Conv2DTranspose { .. } => {
            let g = l.conv_geom(batch).expect("conv");
            (conv2d_transpose_backward_kernel(&g, x, &dy), need_dx.then(|| conv2d_transpose_backward_input(&g, &dy, k)))
        }
        Layer::Dense { units, .. } => {
            (dense_backward_kernel(x, &dy, l.input.len(), units), need_dx.then(|| dense_backward_input(&dy, k, l.input.len(), units)))
        }
        Layer::Flatten | Layer::Reshape { .. } => unreachable!("handled above"),
    };
    let kp = &model.params[l.kernel_param.expect("layer has weights")];
    let bp = &model.params[l.kernel_param.expect("layer has weights") + 1];
    let db = bias_backward(&dy, bp.len);
    for (g, d) in grads[kp.offset..kp.offset + kp.len].iter_mut().zip(&dk) {
        *g += d;
    }
    for (g, d) in grads[bp.offset..bp.offset + bp.len].iter_mut().zip(&db) {
        *g += d;
    }
    dx
}

/// Everything the forward pass computes, kept for the backward pass.
#[derive(Clone, Debug)]
pub struct Pass {
    pub batch: usize,
    /// enc[0] is the input; enc[i + 1] the output of encoder layer i. The last is [B, 2L].
    pub enc: Vec<Vec<f32>>,
    pub eps: Vec<f32>,
    pub z: Vec<f32>,
    /// dec[0] is z; dec[i + 1] the output of decoder layer i. The last is the logits.
    pub dec: Vec<Vec<f32>>,
    /// Per example: the summed cross-entropy and the KL term.
    pub ce: Vec<f32>,
    pub kl: Vec<f32>,
    /// The batch loss (the negative ELBO estimate for the TF preset).
    pub loss: f32,
}

impl Pass {
    pub fn enc_out(&self) -> &[f32] {
        self.enc.last().expect("encoder output")
    }
    pub fn logits(&self) -> &[f32] {
        self.dec.last().expect("decoder output")
    }
}

pub fn encode(model: &Model, params: &[f32], x: &[f32], batch: usize) -> Vec<Vec<f32>> {
    let mut acts = vec![x.to_vec()];
    for l in &model.encoder {
        let y = layer_forward(model, l, batch, acts.last().expect("input"), params);
        acts.push(y);
    }
    acts
}

pub fn decode(model: &Model, params: &[f32], z: &[f32], batch: usize) -> Vec<Vec<f32>> {
    let mut acts = vec![z.to_vec()];
    for l in &model.decoder {
        let y = layer_forward(model, l, batch, acts.last().expect("input"), params);
        acts.push(y);
    }
    acts
}

/// Forward pass and loss for a batch `x` [B, pixels] with noise `eps` [B, latent].
pub fn forward(model: &Model, params: &[f32], x: &[f32], eps: &[f32], batch: usize) -> Pass {
    let enc = encode(model, params, x, batch);
    let enc_out = enc.last().expect("encoder output");
    let z = reparameterize(enc_out, eps, model.latent);
    let dec = decode(model, params, &z, batch);
    let ce = sigmoid_cross_entropy_forward(dec.last().expect("logits"), x, model.image.len());
    let kl = match model.loss.kl {
        KlKind::Mc => kl_mc_forward(enc_out, &z, model.latent),
        KlKind::Analytic => kl_analytic_forward(enc_out, model.latent, model.loss.kl_scale),
    };
    let loss = loss_reduce(&ce, &kl, model.loss.recon_scale);
    Pass { batch, enc, eps: eps.to_vec(), z, dec, ce, kl, loss }
}

/// Gradient of the batch loss w.r.t. every parameter, in the flat layout.
pub fn backward(model: &Model, params: &[f32], pass: &Pass, x: &[f32]) -> Vec<f32> {
    let batch = pass.batch;
    let mut grads = vec![0.0f32; model.num_params];
    let scale = 1.0 / batch as f32;
    let mut dy = sigmoid_cross_entropy_backward(pass.logits(), x, model.loss.recon_scale * scale);
    for (i, l) in model.decoder.iter().enumerate().rev() {
        dy = layer_backward(model, l, batch, &pass.dec[i], &pass.dec[i + 1], &dy, params, &mut grads, true).expect("dx");
    }
    let enc_out = pass.enc_out();
    let mut dy = match model.loss.kl {
        KlKind::Mc => kl_mc_backward(&dy, enc_out, &pass.eps, &pass.z, model.latent, scale),
        KlKind::Analytic => kl_analytic_backward(&dy, enc_out, &pass.eps, model.latent, model.loss.kl_scale, scale),
    };
    for (i, l) in model.encoder.iter().enumerate().rev() {
        match layer_backward(model, l, batch, &pass.enc[i], &pass.enc[i + 1], &dy, params, &mut grads, i > 0) {
            Some(dx) => dy = dx,
            None => break,
        }
    }
    grads
}

/// Optimizer state: the step count and `state_slots` vectors the size of the parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct OptState {
    pub step: u64,
    pub slots: Vec<Vec<f32>>,
}

impl OptState {
    pub fn new(opt: &Optimizer, num_params: usize) -> Self {
        OptState { step: 0, slots: vec![vec![0.0; num_params]; opt.state_slots()] }
    }
}

pub fn optimizer_step(opt: &Optimizer, params: &mut [f32], grads: &[f32], state: &mut OptState) {
    state.step += 1;
    match *opt {
        Optimizer::Adam { lr, beta1, beta2, eps } => {
            let alpha = adam_alpha(lr, beta1, beta2, state.step);
            let (m, v) = state.slots.split_at_mut(1);
            adam_update(params, grads, &mut m[0], &mut v[0], alpha, beta1, beta2, eps);
        }
        Optimizer::RmsProp { lr, rho, eps } => rmsprop_update(params, grads, &mut state.slots[0], lr, rho, eps),
    }
}

/// One training step on batch `x`; the noise is the `Noise` stream at the step count.
/// Returns the batch loss before the update.
pub fn train_step(model: &Model, opt: &Optimizer, params: &mut [f32], state: &mut OptState, x: &[f32], rng: &Rng, batch: usize) -> f32 {
    let eps = rng.normals(Stream::Noise, state.step as u32, batch * model.latent);
    let pass = forward(model, params, x, &eps, batch);
    let grads = backward(model, params, &pass, x);
    optimizer_step(opt, params, &grads, state);
    pass.loss
}
