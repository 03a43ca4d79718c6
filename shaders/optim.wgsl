// Optimizers over the flat parameter buffer, as Keras defines them. Twin of src/cpu/optim.rs.

struct Optim {
    n: u32, _p0: u32, _p1: u32, _p2: u32,
    lr: f32, beta1: f32, beta2: f32, eps: f32,
}

@group(0) @binding(0) var<uniform> p: Optim;
// vec4 views: four parameters per invocation, each updated exactly as alone (storage
// loads, not arithmetic, bound these kernels on lavapipe). Buffers are padded to 16
// bytes; parameters past n are never written.
@group(0) @binding(1) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grads: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> m: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> v: array<vec4<f32>>;

// Which of the 4 parameters of vec4 i exist (1.0) or are padding (0.0).
fn live(i: u32) -> vec4<bool> {
    return vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.n);
}
@group(0) @binding(5) var<uniform> step: Step;

// Bindings: p, params, grads, m, v, step. Grid: one invocation per 4 parameters.
// One invocation, per parameter: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
// p -= alpha m / (sqrt(v) + eps).
@compute @workgroup_size(WG)
fn adam_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_id(wid, nwg, lid);
    if 4u * i >= p.n { return; }
    let g = grads[i];
    let mi = m[i] + (g - m[i]) * (1.0 - p.beta1);
    let vi = v[i] + (g * g - v[i]) * (1.0 - p.beta2);
    let keep = live(i);
    m[i] = select(m[i], mi, keep);
    v[i] = select(v[i], vi, keep);
    params[i] = select(params[i], params[i] - step.alpha * mi / (sqrt(vi) + p.eps), keep);
}

// Bindings: p, params, grads, v. Grid: one invocation per 4 parameters.
// One invocation, per parameter: v = rho v + (1 - rho) g^2; p -= lr g / sqrt(v + eps).
// (rho travels in beta2.)
@compute @workgroup_size(WG)
fn rmsprop_update(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_id(wid, nwg, lid);
    if 4u * i >= p.n { return; }
    let g = grads[i];
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    let keep = live(i);
    v[i] = select(v[i], vi, keep);
    params[i] = select(params[i], params[i] - p.lr * g / sqrt(vi + p.eps), keep);
}
