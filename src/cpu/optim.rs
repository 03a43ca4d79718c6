//! Optimizers over one flat parameter buffer, as Keras defines them.

/// Adam's step size at step `t` (1-based): lr * sqrt(1 - b2^t) / (1 - b1^t),
/// computed in f64 on the host and handed to the CPU and the shader alike as f32.
pub fn adam_alpha(lr: f32, beta1: f32, beta2: f32, t: u64) -> f32 {
    let t = t as i32;
    (lr as f64 * (1.0 - (beta2 as f64).powi(t)).sqrt() / (1.0 - (beta1 as f64).powi(t))) as f32
}

/// m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); p -= alpha m / (sqrt(v) + eps).
pub fn adam_update(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], alpha: f32, beta1: f32, beta2: f32, eps: f32) {
    for i in 0..params.len() {
        let g = grads[i];
        m[i] += (g - m[i]) * (1.0 - beta1);
        v[i] += (g * g - v[i]) * (1.0 - beta2);
        params[i] -= alpha * m[i] / (v[i].sqrt() + eps);
    }
}

/// v = rho v + (1 - rho) g^2; p -= lr g / sqrt(v + eps) (Keras's RMSprop, not centered).
pub fn rmsprop_update(params: &mut [f32], grads: &[f32], v: &mut [f32], lr: f32, rho: f32, eps: f32) {
    for i in 0..params.len() {
        let g = grads[i];
        v[i] = rho * v[i] + (1.0 - rho) * g * g;
        params[i] -= lr * g / (v[i] + eps).sqrt();
    }
}
