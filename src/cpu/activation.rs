//! ReLU (fused into the producing layer's forward pass) and the bias gradient
//! shared by conv2d, conv2d_transpose and dense.

use crate::model::Activation;

pub fn apply_activation(y: &mut [f32], act: Activation) {
    if act == Activation::Relu {
        for v in y.iter_mut() {
            *v = v.max(0.0);
        }
    }
}

/// Gradient through a ReLU given its output `y`: dy where y > 0, else 0.
pub fn relu_backward(dy: &[f32], y: &[f32]) -> Vec<f32> {
    dy.iter().zip(y).map(|(&d, &y)| if y > 0.0 { d } else { 0.0 }).collect()
}

/// Bias gradient: the sum of `dy` ([rows, channels]) over rows.
pub fn bias_backward(dy: &[f32], channels: usize) -> Vec<f32> {
    let mut db = vec![0.0f32; channels];
    for row in dy.chunks_exact(channels) {
        for (d, &g) in db.iter_mut().zip(row) {
            *d += g;
        }
    }
    db
}
