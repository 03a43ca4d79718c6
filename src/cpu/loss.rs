//! Sigmoid cross-entropy with logits, in TensorFlow's stable form:
//! max(x, 0) - x*z + log(1 + exp(-|x|)). `log(1 + ...)` rather than `ln_1p` so
//! the shader, which has no log1p, computes the same thing.

/// Elementwise cross-entropy of logit `x` against target `z`.
pub fn sigmoid_cross_entropy(x: f32, z: f32) -> f32 {
    x.max(0.0) - x * z + (1.0 + (-x.abs()).exp()).ln()
}

pub use crate::math::sigmoid;

/// Per-example sum of the cross-entropy over its `pixels` values: [B].
pub fn sigmoid_cross_entropy_forward(logits: &[f32], targets: &[f32], pixels: usize) -> Vec<f32> {
    logits
        .chunks_exact(pixels)
        .zip(targets.chunks_exact(pixels))
        .map(|(l, t)| l.iter().zip(t).map(|(&x, &z)| sigmoid_cross_entropy(x, z)).sum())
        .collect()
}

/// d(scale * sum CE)/d logits = scale * (sigmoid(x) - z).
pub fn sigmoid_cross_entropy_backward(logits: &[f32], targets: &[f32], scale: f32) -> Vec<f32> {
    logits.iter().zip(targets).map(|(&x, &z)| scale * (sigmoid(x) - z)).collect()
}

/// The batch loss: mean over examples of recon_scale * CE + KL.
pub fn loss_reduce(ce: &[f32], kl: &[f32], recon_scale: f32) -> f32 {
    ce.iter().zip(kl).map(|(&c, &k)| recon_scale * c + k).sum::<f32>() / ce.len() as f32
}
