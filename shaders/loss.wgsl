// Sigmoid cross-entropy with logits, TensorFlow's stable form, and the batch loss.
// Twin of src/cpu/loss.rs. Reductions use a fixed tree in workgroup memory, so the
// same inputs give the same bits on the same adapter: no atomics.

struct Loss {
    batch: u32, pixels: u32, _p0: u32, _p1: u32,
    // d(loss)/d(logit) factor: recon_scale / batch.
    grad_scale: f32, recon_scale: f32, inv_batch: f32, _p2: f32,
}

@group(0) @binding(0) var<uniform> p: Loss;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<f32>;
// Written by sigmoid_cross_entropy_forward, read by loss_reduce.
@group(0) @binding(3) var<storage, read_write> ce: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read> kl: array<f32>;
@group(0) @binding(6) var<storage, read_write> losses: array<f32>;
@group(0) @binding(7) var<uniform> step: Step;

fn sigmoid_cross_entropy(x: f32, z: f32) -> f32 {
    return max(x, 0.0) - x * z + log(1.0 + exp(-abs(x)));
}

// Bindings: p, logits, targets, ce. Grid: one workgroup per example.
// One workgroup: ce[b] = sum over pixels of the cross-entropy (tree_sum, prelude.wgsl).
@compute @workgroup_size(WG)
fn sigmoid_cross_entropy_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let b = wid.y * nwg.x + wid.x;
    let t = lid.x;
    var acc = 0.0;
    if b < p.batch {
        for (var i = t; i < p.pixels; i += WG) {
            acc += sigmoid_cross_entropy(logits[b * p.pixels + i], targets[b * p.pixels + i]);
        }
    }
    partial[t] = acc;
    tree_sum(t);
    if t == 0u && b < p.batch { ce[b] = partial[0]; }
}

// Bindings: p, logits, targets, dlogits. Grid: one invocation per element.
// One invocation: dlogits = grad_scale * (sigmoid(x) - z).
@compute @workgroup_size(WG)
fn sigmoid_cross_entropy_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = linear_id(wid, nwg, lid);
    if idx >= p.batch * p.pixels { return; }
    let x = logits[idx];
    dlogits[idx] = p.grad_scale * (1.0 / (1.0 + exp(-x)) - targets[idx]);
}

// Bindings: p, ce, kl, losses, step. Grid: one workgroup.
// One workgroup: losses[step.loss_slot] = mean over examples of recon_scale * ce + kl.
@compute @workgroup_size(WG)
fn loss_reduce(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    var acc = 0.0;
    for (var b = t; b < p.batch; b += WG) {
        acc += p.recon_scale * ce[b] + kl[b];
    }
    partial[t] = acc;
    tree_sum(t);
    if t == 0u { losses[step.loss_slot] = partial[0] * p.inv_batch; }
}
