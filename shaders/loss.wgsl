// Sigmoid cross-entropy with logits, TensorFlow's stable form, and the batch loss.
// Twin of src/cpu/loss.rs. Reductions use a fixed tree in workgroup memory, so the
// same inputs give the same bits on the same adapter: no atomics.

struct Loss {
    batch: u32, pixels: u32, _p0: u32, _p1: u32,
    // d(loss)/d(logit) factor: recon_scale / batch.
    grad_scale: f32, recon_scale: f32, inv_batch: f32, _p2: f32,
}

// Per-step values, written by the host before each step's submission.
struct Step {
    step: u32, batch_start: u32, loss_slot: u32, alpha: f32,
}

@group(0) @binding(0) var<uniform> p: Loss;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<f32>;
@group(0) @binding(3) var<storage, read_write> ce: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read> kl: array<f32>;
@group(0) @binding(6) var<storage, read_write> losses: array<f32>;
@group(0) @binding(7) var<uniform> s: Step;
@group(0) @binding(8) var<storage, read> ce_in: array<f32>;

var<workgroup> partial: array<f32, 64>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 64u + lid.x;
}

fn sigmoid_cross_entropy(x: f32, z: f32) -> f32 {
    return max(x, 0.0) - x * z + log(1.0 + exp(-abs(x)));
}

// Sum partial[0..64] into partial[0]; every invocation of the workgroup must call it.
fn tree_sum(t: u32) {
    for (var width = 32u; width > 0u; width = width / 2u) {
        workgroupBarrier();
        if t < width { partial[t] += partial[t + width]; }
    }
    workgroupBarrier();
}

// One workgroup per example: ce[b] = sum over pixels of the cross-entropy.
@compute @workgroup_size(64)
fn sigmoid_cross_entropy_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.y * nwg.x + wid.x;
    let t = lid.x;
    var acc = 0.0;
    if b < p.batch {
        for (var i = t; i < p.pixels; i += 64u) {
            acc += sigmoid_cross_entropy(logits[b * p.pixels + i], targets[b * p.pixels + i]);
        }
    }
    partial[t] = acc;
    tree_sum(t);
    if t == 0u && b < p.batch { ce[b] = partial[0]; }
}

// dlogits = grad_scale * (sigmoid(x) - z).
@compute @workgroup_size(64)
fn sigmoid_cross_entropy_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = linear_id(wid, nwg, lid);
    if idx >= p.batch * p.pixels { return; }
    let x = logits[idx];
    dlogits[idx] = p.grad_scale * (1.0 / (1.0 + exp(-x)) - targets[idx]);
}

// One workgroup: losses[loss_slot] = mean over examples of recon_scale * ce + kl.
@compute @workgroup_size(64)
fn loss_reduce(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    var acc = 0.0;
    for (var b = t; b < p.batch; b += 64u) {
        acc += p.recon_scale * ce_in[b] + kl[b];
    }
    partial[t] = acc;
    tree_sum(t);
    if t == 0u { losses[s.loss_slot] = partial[0] * p.inv_batch; }
}
