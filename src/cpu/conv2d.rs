//! Conv2D with TensorFlow's padding: forward, and gradients w.r.t. input and kernel.
//! x: [B, H, W, C], kernel: [kh, kw, C, F], y: [B, OH, OW, F].
//! Output (oy, ox) reads input (oy*s + i - pad_top, ox*s + j - pad_left).

use super::activation::apply_activation;
use crate::model::{Activation, ConvGeom};

/// The fine-side position that coarse-side position `q` meets through kernel tap `k`,
/// if inside `len`: q * stride + k - pad. The coarse side is a Conv2D's output and a
/// Conv2DTranspose's input (the same helper, and name, as `shaders/prelude.wgsl`).
#[inline]
pub fn fine_from_coarse(q: usize, k: usize, stride: usize, pad: usize, len: usize) -> Option<usize> {
    let p = (q * stride + k).checked_sub(pad)?;
    (p < len).then_some(p)
}

pub fn conv2d_forward(g: &ConvGeom, x: &[f32], kernel: &[f32], bias: &[f32], act: Activation) -> Vec<f32> {
    let mut y = vec![0.0f32; g.out_len()];
    for b in 0..g.batch {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let out = &mut y[((b * g.out_h + oy) * g.out_w + ox) * g.out_c..][..g.out_c];
                out.copy_from_slice(bias);
                for i in 0..g.k_h {
                    let Some(iy) = fine_from_coarse(oy, i, g.stride, g.pad_top, g.in_h) else { continue };
                    for j in 0..g.k_w {
                        let Some(ix) = fine_from_coarse(ox, j, g.stride, g.pad_left, g.in_w) else { continue };
                        for c in 0..g.in_c {
                            let xv = x[((b * g.in_h + iy) * g.in_w + ix) * g.in_c + c];
                            let w = &kernel[((i * g.k_w + j) * g.in_c + c) * g.out_c..][..g.out_c];
                            for (o, &wv) in out.iter_mut().zip(w) {
                                *o += xv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    apply_activation(&mut y, act);
    y
}

/// dx[b, iy, ix, c] = sum over the outputs that read (iy, ix) of dy * kernel.
pub fn conv2d_backward_input(g: &ConvGeom, dy: &[f32], kernel: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0f32; g.in_len()];
    for b in 0..g.batch {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let d = &dy[((b * g.out_h + oy) * g.out_w + ox) * g.out_c..][..g.out_c];
                for i in 0..g.k_h {
                    let Some(iy) = fine_from_coarse(oy, i, g.stride, g.pad_top, g.in_h) else { continue };
                    for j in 0..g.k_w {
                        let Some(ix) = fine_from_coarse(ox, j, g.stride, g.pad_left, g.in_w) else { continue };
                        for c in 0..g.in_c {
                            let w = &kernel[((i * g.k_w + j) * g.in_c + c) * g.out_c..][..g.out_c];
                            dx[((b * g.in_h + iy) * g.in_w + ix) * g.in_c + c] += d.iter().zip(w).map(|(a, b)| a * b).sum::<f32>();
                        }
                    }
                }
            }
        }
    }
    dx
}

/// dkernel[i, j, c, f] = sum over batch and outputs of x[tap] * dy.
pub fn conv2d_backward_kernel(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dk = vec![0.0f32; g.kernel_len()];
    for b in 0..g.batch {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                let d = &dy[((b * g.out_h + oy) * g.out_w + ox) * g.out_c..][..g.out_c];
                for i in 0..g.k_h {
                    let Some(iy) = fine_from_coarse(oy, i, g.stride, g.pad_top, g.in_h) else { continue };
                    for j in 0..g.k_w {
                        let Some(ix) = fine_from_coarse(ox, j, g.stride, g.pad_left, g.in_w) else { continue };
                        for c in 0..g.in_c {
                            let xv = x[((b * g.in_h + iy) * g.in_w + ix) * g.in_c + c];
                            let w = &mut dk[((i * g.k_w + j) * g.in_c + c) * g.out_c..][..g.out_c];
                            for (o, &dv) in w.iter_mut().zip(d) {
                                *o += xv * dv;
                            }
                        }
                    }
                }
            }
        }
    }
    dk
}
