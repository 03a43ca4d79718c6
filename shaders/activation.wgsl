// The ReLU gradient and the bias gradient shared by conv2d, conv2d_transpose and
// dense. Twin of src/cpu/activation.rs. (The forward ReLU is fused into each layer.)

struct Act {
    rows: u32, channels: u32, b_off: u32, _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Act;
// vec4 views (buffers are padded to 16 bytes): storage loads, not arithmetic, bound
// these kernels on lavapipe, so each load brings 4 values.
@group(0) @binding(1) var<storage, read> y4: array<vec4<f32>>;
// In place for relu_backward; only read by bias_backward.
@group(0) @binding(2) var<storage, read_write> dy4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> grads: array<f32>;

var<workgroup> partial4: array<vec4<f32>, WG>;

// Bindings: p, y4, dy4. Grid: one invocation per 4 elements.
// One invocation, in place: dy where the layer's output y > 0, else 0, for elements
// 4 i .. 4 i + 4 (those past rows * channels are left as they are).
@compute @workgroup_size(WG)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_id(wid, nwg, lid);
    let n = p.rows * p.channels;
    if 4u * i >= n { return; }
    let live = vec4<u32>(4u * i) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(n);
    let d = dy4[i];
    dy4[i] = select(d, select(vec4<f32>(0.0), d, y4[i] > vec4<f32>(0.0)), live);
}

// Bindings: p, dy4, grads. Grid: one workgroup per 4 channels (channels % 4 == 0), else
// one per channel.
// One workgroup: grads[b_off + c] = sum over rows of dy[row, c]. Each invocation sums
// a strided share of the rows (4 channels from one vec4 load, or one from a scalar)
// and a fixed tree adds the WG partial sums: the same order for every channel either
// way, so the same bits. No invocation loops more than rows / WG times (llvmpipe stops
// looping after 65535 iterations per invocation).
@compute @workgroup_size(WG)
fn bias_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = wid.y * nwg.x + wid.x;
    let t = lid.x;
    let wide = p.channels % 4u == 0u;
    let c0 = select(g, 4u * g, wide);
    var acc = vec4<f32>(0.0);
    if c0 < p.channels {
        for (var r = t; r < p.rows; r += WG) {
            let i = r * p.channels + c0;
            if wide {
                acc += dy4[i / 4u];
            } else {
                acc.x += dy4[i / 4u][i % 4u];
            }
        }
    }
    partial4[t] = acc;
    for (var width = WG / 2u; width > 0u; width = width / 2u) {
        workgroupBarrier();
        if t < width { partial4[t] += partial4[t + width]; }
    }
    if t == 0u && c0 < p.channels {
        let s = partial4[0];
        grads[p.b_off + c0] = s.x;
        if wide {
            grads[p.b_off + c0 + 1u] = s.y;
            grads[p.b_off + c0 + 2u] = s.z;
            grads[p.b_off + c0 + 3u] = s.w;
        }
    }
}

// Bindings: p, dy4, grads. Grid: one invocation per 4 channels (channels % 4 == 0), else
// one per channel. For fewer rows than a workgroup has invocations (src/gpu/ops.rs
// chooses), where bias_backward's tree would leave most of them idle and still pay
// for its barriers (15 ms on lavapipe for the keras-vae's 16 x 3136 bias).
// One invocation: grads[b_off + c] = sum over rows of dy[row, c], the rows in order.
@compute @workgroup_size(WG)
fn bias_backward_columns(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = linear_id(wid, nwg, lid);
    let wide = p.channels % 4u == 0u;
    let c0 = select(g, 4u * g, wide);
    if c0 >= p.channels { return; }
    var acc = vec4<f32>(0.0);
    for (var r = 0u; r < p.rows; r++) {
        let i = r * p.channels + c0;
        if wide {
            acc += dy4[i / 4u];
        } else {
            acc.x += dy4[i / 4u][i % 4u];
        }
    }
    grads[p.b_off + c0] = acc.x;
    if wide {
        grads[p.b_off + c0 + 1u] = acc.y;
        grads[p.b_off + c0 + 2u] = acc.z;
        grads[p.b_off + c0 + 3u] = acc.w;
    }
}
