//! Math both sides need: the CPU reference and the GPU host code compute these the
//! same way, so neither borrows from the other.

/// The logistic function (pixel probabilities from the decoder's logits).
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Adam's step size at step `t` (1-based): lr * sqrt(1 - b2^t) / (1 - b1^t),
/// computed in f64 on the host and handed to the CPU and the shader alike as f32.
pub fn adam_alpha(lr: f32, beta1: f32, beta2: f32, t: u64) -> f32 {
    let t = t as i32;
    (lr as f64 * (1.0 - (beta2 as f64).powi(t)).sqrt() / (1.0 - (beta1 as f64).powi(t))) as f32
}
