//! Conv2DTranspose, TensorFlow's: the exact adjoint of the Conv2D with the same
//! fields. x: [B, H, W, C], kernel: [kh, kw, F, C] (Keras: [kh, kw, out, in]),
//! y: [B, OH, OW, F]. Input (iy, ix) reaches output (iy*s + i - pad_top, ix*s + j - pad_left).

use super::activation::apply_activation;
use super::conv2d::fine_from_coarse;
use crate::model::{Activation, ConvGeom};

pub fn conv2d_transpose_forward(g: &ConvGeom, x: &[f32], kernel: &[f32], bias: &[f32], act: Activation) -> Vec<f32> {
    let mut y: Vec<f32> = bias.iter().copied().cycle().take(g.out_len()).collect();
    for b in 0..g.batch {
        for iy in 0..g.in_h {
            for ix in 0..g.in_w {
                let xs = &x[((b * g.in_h + iy) * g.in_w + ix) * g.in_c..][..g.in_c];
                for i in 0..g.k_h {
                    let Some(oy) = fine_from_coarse(iy, i, g.stride, g.pad_top, g.out_h) else { continue };
                    for j in 0..g.k_w {
                        let Some(ox) = fine_from_coarse(ix, j, g.stride, g.pad_left, g.out_w) else { continue };
                        let out = &mut y[((b * g.out_h + oy) * g.out_w + ox) * g.out_c..][..g.out_c];
                        for (f, o) in out.iter_mut().enumerate() {
                            let w = &kernel[((i * g.k_w + j) * g.out_c + f) * g.in_c..][..g.in_c];
                            *o += xs.iter().zip(w).map(|(a, b)| a * b).sum::<f32>();
                        }
                    }
                }
            }
        }
    }
    apply_activation(&mut y, act);
    y
}

/// dx[b, iy, ix, c] = sum over taps and f of dy[b, oy, ox, f] * kernel[i, j, f, c]:
/// a plain convolution of dy.
pub fn conv2d_transpose_backward_input(g: &ConvGeom, dy: &[f32], kernel: &[f32]) -> Vec<f32> {
    let mut dx = vec![0.0f32; g.in_len()];
    for b in 0..g.batch {
        for iy in 0..g.in_h {
            for ix in 0..g.in_w {
                let out = &mut dx[((b * g.in_h + iy) * g.in_w + ix) * g.in_c..][..g.in_c];
                for i in 0..g.k_h {
                    let Some(oy) = fine_from_coarse(iy, i, g.stride, g.pad_top, g.out_h) else { continue };
                    for j in 0..g.k_w {
                        let Some(ox) = fine_from_coarse(ix, j, g.stride, g.pad_left, g.out_w) else { continue };
                        let d = &dy[((b * g.out_h + oy) * g.out_w + ox) * g.out_c..][..g.out_c];
                        for (f, &dv) in d.iter().enumerate() {
                            let w = &kernel[((i * g.k_w + j) * g.out_c + f) * g.in_c..][..g.in_c];
                            for (o, &wv) in out.iter_mut().zip(w) {
                                *o += dv * wv;
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

/// dkernel[i, j, f, c] = sum over batch and inputs of dy[tap] * x.
pub fn conv2d_transpose_backward_kernel(g: &ConvGeom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dk = vec![0.0f32; g.kernel_len()];
    for b in 0..g.batch {
        for iy in 0..g.in_h {
            for ix in 0..g.in_w {
                let xs = &x[((b * g.in_h + iy) * g.in_w + ix) * g.in_c..][..g.in_c];
                for i in 0..g.k_h {
                    let Some(oy) = fine_from_coarse(iy, i, g.stride, g.pad_top, g.out_h) else { continue };
                    for j in 0..g.k_w {
                        let Some(ox) = fine_from_coarse(ix, j, g.stride, g.pad_left, g.out_w) else { continue };
                        let d = &dy[((b * g.out_h + oy) * g.out_w + ox) * g.out_c..][..g.out_c];
                        for (f, &dv) in d.iter().enumerate() {
                            let w = &mut dk[((i * g.k_w + j) * g.out_c + f) * g.in_c..][..g.in_c];
                            for (o, &xv) in w.iter_mut().zip(xs) {
                                *o += dv * xv;
                            }
                        }
                    }
                }
            }
        }
    }
    dk
}
