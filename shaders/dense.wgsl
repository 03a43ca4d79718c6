// Dense: y = act(x W + b). Twin of src/cpu/dense.rs.
// x: [B, I]; kernel [I, O] at params[w_off] (Keras's layout); bias [O] at params[b_off]; y: [B, O].

struct Dense {
    batch: u32, inputs: u32, outputs: u32, w_off: u32,
    b_off: u32, relu: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Dense;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> grads: array<f32>;

// Bindings: p, x, params, y. Grid: one invocation per output element.
// One invocation: y[b, o] = act(bias[o] + sum over k of x[b, k] * kernel[k, o]).
@compute @workgroup_size(WG)
fn dense_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = linear_id(wid, nwg, lid);
    if idx >= p.batch * p.outputs { return; }
    let o = idx % p.outputs;
    let b = idx / p.outputs;
    var acc = params[p.b_off + o];
    for (var k = 0u; k < p.inputs; k++) {
        acc += x[b * p.inputs + k] * params[p.w_off + k * p.outputs + o];
    }
    if p.relu != 0u { acc = max(acc, 0.0); }
    y[idx] = acc;
}

// Bindings: p, params, dy, dx. Grid: one invocation per input element.
// One invocation: dx[b, k] = sum over o of dy[b, o] * kernel[k, o] (dx = dy W^T).
@compute @workgroup_size(WG)
fn dense_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = linear_id(wid, nwg, lid);
    if idx >= p.batch * p.inputs { return; }
    let k = idx % p.inputs;
    let b = idx / p.inputs;
    var acc = 0.0;
    for (var o = 0u; o < p.outputs; o++) {
        acc += dy[b * p.outputs + o] * params[p.w_off + k * p.outputs + o];
    }
    dx[idx] = acc;
}

// Bindings: p, x, dy, grads. Grid: one invocation per kernel element.
// One invocation: grads[w_off + k * O + o] = sum over the batch of x[b, k] * dy[b, o] (dW = x^T dy).
@compute @workgroup_size(WG)
fn dense_backward_kernel(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = linear_id(wid, nwg, lid);
    if idx >= p.inputs * p.outputs { return; }
    let o = idx % p.outputs;
    let k = idx / p.outputs;
    var acc = 0.0;
    for (var b = 0u; b < p.batch; b++) {
        acc += x[b * p.inputs + k] * dy[b * p.outputs + o];
    }
    grads[p.w_off + idx] = acc;
}
