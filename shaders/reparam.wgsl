// The reparameterisation z = mean + exp(logvar / 2) * eps, eps drawn here from the
// counter-based RNG (rng.wgsl, prepended to every file). Twin of src/cpu/reparam.rs.

struct Reparam {
    batch: u32, latent: u32, key0: u32, key1: u32,
    // 1: the noise of row b is indexed by its image, step.batch_start + b (cvae eval);
    // 0: by the row (training, whose step counter already names the batch).
    by_image: u32, _p0: u32, _p1: u32, _p2: u32,
}

@group(0) @binding(0) var<uniform> p: Reparam;
@group(0) @binding(1) var<storage, read> enc: array<f32>;
@group(0) @binding(2) var<storage, read_write> z: array<f32>;
@group(0) @binding(3) var<storage, read_write> eps: array<f32>;
@group(0) @binding(4) var<uniform> step: Step;
@group(0) @binding(5) var<storage, read_write> bits: array<vec4<u32>>;

// Bindings: p, enc, z, eps, step. Grid: one invocation per latent value of the batch.
// One invocation: eps[b, l] = normal(key, step.step, index), the index b * latent + l, or
// (step.batch_start + b) * latent + l by image; z from enc's mean and log-variance.
@compute @workgroup_size(WG)
fn reparameterize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_id(wid, nwg, lid);
    if i >= p.batch * p.latent { return; }
    let b = i / p.latent;
    let l = i % p.latent;
    let index = select(i, (step.batch_start + b) * p.latent + l, p.by_image != 0u);
    let e = rng_normal(vec2<u32>(p.key0, p.key1), step.step, index);
    let m = enc[b * 2u * p.latent + l];
    let lv = enc[b * 2u * p.latent + p.latent + l];
    eps[i] = e;
    z[i] = m + exp(0.5 * lv) * e;
}

// Bindings: p, eps, bits, step. Grid: one invocation per index.
// One invocation: bits and normal of index i at step.step: the raw stream, for the
// tests that hold it to the CPU's.
@compute @workgroup_size(WG)
fn rng_stream(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_id(wid, nwg, lid);
    if i >= p.batch * p.latent { return; }
    let key = vec2<u32>(p.key0, p.key1);
    bits[i] = rng_bits(key, step.step, i);
    eps[i] = rng_normal(key, step.step, i);
}
