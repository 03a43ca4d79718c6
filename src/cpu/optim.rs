//! Optimizers over one flat parameter buffer, as Keras defines them.

pub use crate::math::adam_alpha;

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
