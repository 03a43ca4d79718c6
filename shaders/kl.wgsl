// The KL terms per example and the gradient w.r.t. the encoder output [B, 2L]
// (mean | log-variance), including the decoder's gradient dz through the sampled z.
// Twin of src/cpu/kl.rs.

struct Kl {
    batch: u32, latent: u32, _p0: u32, _p1: u32,
    // The per-example weight of the batch mean (1 / batch), and the analytic KL's factor.
    scale: f32, kl_scale: f32, _p2: f32, _p3: f32,
}

@group(0) @binding(0) var<uniform> p: Kl;
@group(0) @binding(1) var<storage, read> enc: array<f32>;
@group(0) @binding(2) var<storage, read> z: array<f32>;
@group(0) @binding(3) var<storage, read> eps: array<f32>;
@group(0) @binding(4) var<storage, read> dz: array<f32>;
@group(0) @binding(5) var<storage, read_write> kl: array<f32>;
@group(0) @binding(6) var<storage, read_write> denc: array<f32>;

const LOG_2PI: f32 = 1.8378771;

fn log_normal_pdf(x: f32, mean: f32, logvar: f32) -> f32 {
    return -0.5 * ((x - mean) * (x - mean) * exp(-logvar) + logvar + LOG_2PI);
}

// Bindings: p, enc, z, kl. Grid: one invocation per example.
// One invocation: kl[b] = log q(z|x) - log p(z) at the sampled z (the reference program's estimate).
@compute @workgroup_size(WG)
fn kl_mc_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = linear_id(wid, nwg, lid);
    if b >= p.batch { return; }
    var logqz = 0.0;
    var logpz = 0.0;
    for (var l = 0u; l < p.latent; l++) {
        let zv = z[b * p.latent + l];
        logqz += log_normal_pdf(zv, enc[b * 2u * p.latent + l], enc[b * 2u * p.latent + p.latent + l]);
        logpz += log_normal_pdf(zv, 0.0, 0.0);
    }
    kl[b] = logqz - logpz;
}

// Bindings: p, enc, z, eps, dz, denc. Grid: one invocation per latent value of the batch.
// One invocation: the mean's and log-variance's gradient of latent l of example b,
// through the KL estimate and through z (the decoder's dz).
@compute @workgroup_size(WG)
fn kl_mc_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_id(wid, nwg, lid);
    if i >= p.batch * p.latent { return; }
    let b = i / p.latent;
    let l = i % p.latent;
    let m = enc[b * 2u * p.latent + l];
    let lv = enc[b * 2u * p.latent + p.latent + l];
    let zv = z[i];
    let inv_var = exp(-lv);
    let diff = zv - m;
    let dz_total = dz[i] + p.scale * (zv - diff * inv_var);
    denc[b * 2u * p.latent + l] = dz_total + p.scale * diff * inv_var;
    denc[b * 2u * p.latent + p.latent + l] = dz_total * 0.5 * exp(0.5 * lv) * eps[i] + p.scale * (0.5 * diff * diff * inv_var - 0.5);
}

// Bindings: p, enc, kl. Grid: one invocation per example.
// One invocation: kl[b] = kl_scale * sum_l (e^lv + m^2 - 1 - lv).
@compute @workgroup_size(WG)
fn kl_analytic_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = linear_id(wid, nwg, lid);
    if b >= p.batch { return; }
    var acc = 0.0;
    for (var l = 0u; l < p.latent; l++) {
        let m = enc[b * 2u * p.latent + l];
        let lv = enc[b * 2u * p.latent + p.latent + l];
        acc += exp(lv) + m * m - 1.0 - lv;
    }
    kl[b] = p.kl_scale * acc;
}

// Bindings: p, enc, eps, dz, denc. Grid: one invocation per latent value of the batch.
// One invocation: as kl_mc_backward, for the closed-form KL.
@compute @workgroup_size(WG)
fn kl_analytic_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_id(wid, nwg, lid);
    if i >= p.batch * p.latent { return; }
    let b = i / p.latent;
    let l = i % p.latent;
    let m = enc[b * 2u * p.latent + l];
    let lv = enc[b * 2u * p.latent + p.latent + l];
    denc[b * 2u * p.latent + l] = dz[i] + p.scale * p.kl_scale * 2.0 * m;
    denc[b * 2u * p.latent + p.latent + l] = dz[i] * 0.5 * exp(0.5 * lv) * eps[i] + p.scale * p.kl_scale * (exp(lv) - 1.0);
}
