//! Dense: y = act(x W + b). x: [B, I], kernel: [I, O] (Keras's layout), y: [B, O].

use super::activation::apply_activation;
use crate::model::Activation;

pub fn dense_forward(x: &[f32], kernel: &[f32], bias: &[f32], inputs: usize, act: Activation) -> Vec<f32> {
    let outputs = bias.len();
    let mut y = Vec::with_capacity(x.len() / inputs * outputs);
    for row in x.chunks_exact(inputs) {
        let mut out = bias.to_vec();
        for (k, &xv) in row.iter().enumerate() {
            for (o, &w) in out.iter_mut().zip(&kernel[k * outputs..(k + 1) * outputs]) {
                *o += xv * w;
            }
        }
        y.extend_from_slice(&out);
    }
    apply_activation(&mut y, act);
    y
}

/// dx = dy W^T.
pub fn dense_backward_input(dy: &[f32], kernel: &[f32], inputs: usize, outputs: usize) -> Vec<f32> {
    let mut dx = Vec::with_capacity(dy.len() / outputs * inputs);
    for d in dy.chunks_exact(outputs) {
        for k in 0..inputs {
            dx.push(d.iter().zip(&kernel[k * outputs..(k + 1) * outputs]).map(|(a, b)| a * b).sum());
        }
    }
    dx
}

/// dW = x^T dy, summed over the batch.
pub fn dense_backward_kernel(x: &[f32], dy: &[f32], inputs: usize, outputs: usize) -> Vec<f32> {
    let mut dk = vec![0.0f32; inputs * outputs];
    for (row, d) in x.chunks_exact(inputs).zip(dy.chunks_exact(outputs)) {
        for (k, &xv) in row.iter().enumerate() {
            for (o, &dv) in dk[k * outputs..(k + 1) * outputs].iter_mut().zip(d) {
                *o += xv * dv;
            }
        }
    }
    dk
}
