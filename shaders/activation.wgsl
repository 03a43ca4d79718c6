// The ReLU gradient and the bias gradient shared by conv2d, conv2d_transpose and
// dense. Twin of src/cpu/activation.rs. (The forward ReLU is fused into each layer.)

struct Act {
    rows: u32, channels: u32, b_off: u32, _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Act;
@group(0) @binding(1) var<storage, read> y: array<f32>;
// In place for relu_backward; only read by bias_backward.
@group(0) @binding(2) var<storage, read_write> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;

// Bindings: p, y, dy. Grid: one invocation per element.
// One invocation, in place: dy where the layer's output y > 0, else 0.
@compute @workgroup_size(WG)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = linear_id(wid, nwg, lid);
    if idx >= p.rows * p.channels { return; }
    dy[idx] = select(0.0, dy[idx], y[idx] > 0.0);
}

// Bindings: p, dy, grads. Grid: one workgroup per channel.
// One workgroup: grads[b_off + c] = sum over rows of dy[row, c]. Each invocation sums
// a strided share of the rows and tree_sum (prelude.wgsl) adds the WG partial sums,
// so the order is deterministic and no invocation loops more than rows / WG times
// (llvmpipe stops looping after 65535 iterations per invocation).
@compute @workgroup_size(WG)
fn bias_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.y * nwg.x + wid.x;
    let t = lid.x;
    var acc = 0.0;
    if c < p.channels {
        for (var r = t; r < p.rows; r += WG) {
            acc += dy[r * p.channels + c];
        }
    }
    partial[t] = acc;
    tree_sum(t);
    if t == 0u && c < p.channels { grads[p.b_off + c] = partial[0]; }
}
