//! The encoder output [B, 2*latent] holds the mean in its first `latent` columns and
//! the log-variance in the rest (tf.split(x, 2, axis=1)). z = mean + exp(logvar / 2) * eps.

/// The mean and log-variance of example `b`, latent `l`.
#[inline]
pub fn mean_logvar(enc_out: &[f32], latent: usize, b: usize, l: usize) -> (f32, f32) {
    (enc_out[b * 2 * latent + l], enc_out[b * 2 * latent + latent + l])
}

/// Split [B, 2L] into mean [B, L] and log-variance [B, L].
pub fn split(enc_out: &[f32], latent: usize) -> (Vec<f32>, Vec<f32>) {
    let mut mean = Vec::with_capacity(enc_out.len() / 2);
    let mut logvar = Vec::with_capacity(enc_out.len() / 2);
    for row in enc_out.chunks_exact(2 * latent) {
        mean.extend_from_slice(&row[..latent]);
        logvar.extend_from_slice(&row[latent..]);
    }
    (mean, logvar)
}

/// z = mean + exp(0.5 * logvar) * eps, with eps [B, L] from `Rng::normals`.
pub fn reparameterize(enc_out: &[f32], eps: &[f32], latent: usize) -> Vec<f32> {
    eps.iter()
        .enumerate()
        .map(|(i, &e)| {
            let (m, lv) = mean_logvar(enc_out, latent, i / latent, i % latent);
            m + (0.5 * lv).exp() * e
        })
        .collect()
}
