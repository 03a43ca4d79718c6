//! The KL terms of the ELBO, per example, and their gradients w.r.t. the encoder
//! output [B, 2L], including the path through the sampled z.
//!
//! The backward functions take `dz`, the decoder's gradient w.r.t. z, and return
//! the whole gradient w.r.t. (mean | log-variance): the reparameterisation's
//! backward and the KL's own terms in one pass, as the shaders do.

use super::reparam::mean_logvar;

pub const LOG_2PI: f32 = 1.837_877_1;

/// log N(x; mean, exp(logvar)), as the reference program's `log_normal_pdf` (one element).
pub fn log_normal_pdf(x: f32, mean: f32, logvar: f32) -> f32 {
    -0.5 * ((x - mean) * (x - mean) * (-logvar).exp() + logvar + LOG_2PI)
}

/// Single-sample Monte Carlo KL of the reference program: log q(z|x) - log p(z) at z.
pub fn kl_mc_forward(enc_out: &[f32], z: &[f32], latent: usize) -> Vec<f32> {
    z.chunks_exact(latent)
        .enumerate()
        .map(|(b, zs)| {
            let mut logqz = 0.0f32;
            let mut logpz = 0.0f32;
            for (l, &zv) in zs.iter().enumerate() {
                let (m, lv) = mean_logvar(enc_out, latent, b, l);
                logqz += log_normal_pdf(zv, m, lv);
                logpz += log_normal_pdf(zv, 0.0, 0.0);
            }
            logqz - logpz
        })
        .collect()
}

/// Gradient of `scale * sum_b KL_mc` plus the decoder's `dz`, w.r.t. [B, 2L].
/// With K = sum_l -0.5((z-m)^2 e^-lv + lv) + 0.5 z^2 and z = m + e^(lv/2) eps:
/// dK/dz = z - (z-m) e^-lv; dK/dm (z held) = (z-m) e^-lv; dK/dlv (z held) = 0.5 (z-m)^2 e^-lv - 0.5.
pub fn kl_mc_backward(dz: &[f32], enc_out: &[f32], eps: &[f32], z: &[f32], latent: usize, scale: f32) -> Vec<f32> {
    let mut d = vec![0.0f32; enc_out.len()];
    for (i, ((&dzv, &e), &zv)) in dz.iter().zip(eps).zip(z).enumerate() {
        let (b, l) = (i / latent, i % latent);
        let (m, lv) = mean_logvar(enc_out, latent, b, l);
        let inv_var = (-lv).exp();
        let diff = zv - m;
        let dz_total = dzv + scale * (zv - diff * inv_var);
        d[b * 2 * latent + l] = dz_total + scale * diff * inv_var;
        d[b * 2 * latent + latent + l] = dz_total * 0.5 * (0.5 * lv).exp() * e + scale * (0.5 * diff * diff * inv_var - 0.5);
    }
    d
}

/// Closed-form KL(N(m, e^lv) || N(0, 1)) scaled: kl_scale * sum_l (e^lv + m^2 - 1 - lv).
/// kl_scale = 0.5 is the textbook KL; the Keras preset uses 5e-4 / latent.
pub fn kl_analytic_forward(enc_out: &[f32], latent: usize, kl_scale: f32) -> Vec<f32> {
    enc_out
        .chunks_exact(2 * latent)
        .map(|row| {
            let s: f32 = (0..latent).map(|l| row[latent + l].exp() + row[l] * row[l] - 1.0 - row[latent + l]).sum();
            kl_scale * s
        })
        .collect()
}

/// Gradient of `scale * sum_b KL_analytic` plus the decoder's `dz`, w.r.t. [B, 2L].
pub fn kl_analytic_backward(dz: &[f32], enc_out: &[f32], eps: &[f32], latent: usize, kl_scale: f32, scale: f32) -> Vec<f32> {
    let mut d = vec![0.0f32; enc_out.len()];
    for (i, (&dzv, &e)) in dz.iter().zip(eps).enumerate() {
        let (b, l) = (i / latent, i % latent);
        let (m, lv) = mean_logvar(enc_out, latent, b, l);
        d[b * 2 * latent + l] = dzv + scale * kl_scale * 2.0 * m;
        d[b * 2 * latent + latent + l] = dzv * 0.5 * (0.5 * lv).exp() * e + scale * kl_scale * (lv.exp() - 1.0);
    }
    d
}
