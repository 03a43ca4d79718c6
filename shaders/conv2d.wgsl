// Conv2D with TensorFlow's padding, one output per invocation. Twin of src/cpu/conv2d.rs.
// x: [B, H, W, C]; kernel [kh, kw, C, F] at params[w_off]; bias [F] at params[b_off];
// y: [B, OH, OW, F]. Output (oy, ox) reads input (oy*s + i - pad_top, ox*s + j - pad_left):
// the output is the coarse side (prelude.wgsl).
// The faster kernels for the same ops are in blocked.wgsl.

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> grads: array<f32>;
@group(0) @binding(7) var<storage, read_write> part: array<f32>;
@group(0) @binding(8) var<storage, read> partial_sums: array<f32>;

// Bindings: p, x, params, y. Grid: one invocation per output element.
// One invocation: y[b, oy, ox, f] = act(bias[f] + sum over taps and c of x * kernel).
@compute @workgroup_size(WG)
fn conv2d_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = linear_id(wid, nwg, lid);
    if idx >= p.batch * p.out_h * p.out_w * p.out_c { return; }
    let f = idx % p.out_c;
    var r = idx / p.out_c;
    let ox = r % p.out_w;
    r = r / p.out_w;
    let oy = r % p.out_h;
    let b = r / p.out_h;
    var acc = params[p.b_off + f];
    for (var i = 0u; i < p.k_h; i++) {
        let iy = fine_from_coarse(oy, i, p.stride, p.pad_top, p.in_h);
        if iy < 0 { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let ix = fine_from_coarse(ox, j, p.stride, p.pad_left, p.in_w);
            if ix < 0 { continue; }
            let xb = ((b * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.in_c;
            let wb = p.w_off + (i * p.k_w + j) * p.in_c * p.out_c + f;
            for (var c = 0u; c < p.in_c; c++) {
                acc += x[xb + c] * params[wb + c * p.out_c];
            }
        }
    }
    if p.relu != 0u { acc = max(acc, 0.0); }
    y[idx] = acc;
}

// Bindings: p, params, dy, dx. Grid: one invocation per input element.
// One invocation: dx[b, iy, ix, c] = sum over the outputs that read (iy, ix) of dy * kernel.
@compute @workgroup_size(WG)
fn conv2d_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = linear_id(wid, nwg, lid);
    if idx >= p.batch * p.in_h * p.in_w * p.in_c { return; }
    let c = idx % p.in_c;
    var r = idx / p.in_c;
    let ix = r % p.in_w;
    r = r / p.in_w;
    let iy = r % p.in_h;
    let b = r / p.in_h;
    var acc = 0.0;
    for (var i = 0u; i < p.k_h; i++) {
        let oy = coarse_from_fine(iy, i, p.stride, p.pad_top, p.out_h);
        if oy < 0 { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let ox = coarse_from_fine(ix, j, p.stride, p.pad_left, p.out_w);
            if ox < 0 { continue; }
            let db = ((b * p.out_h + u32(oy)) * p.out_w + u32(ox)) * p.out_c;
            let wb = p.w_off + ((i * p.k_w + j) * p.in_c + c) * p.out_c;
            for (var f = 0u; f < p.out_c; f++) {
                acc += dy[db + f] * params[wb + f];
            }
        }
    }
    dx[idx] = acc;
}

// Bindings: p, x, dy, part. Grid: one invocation per kernel element and batch slice.
// One invocation: part[s][i, j, c, f] = sum over slice s's images and the outputs of
// x[tap] * dy. conv2d_backward_kernel_reduce then adds the slices in order into
// grads[w_off]. Slicing keeps an invocation under llvmpipe's budget of 65535 loop
// iterations (all loops together), which one pass over a large batch would exceed.
@compute @workgroup_size(WG)
fn conv2d_backward_kernel(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let len = p.k_h * p.k_w * p.in_c * p.out_c;
    let idx = linear_id(wid, nwg, lid);
    if idx >= len * p.slices { return; }
    let s = idx / len;
    let e = idx % len;
    let f = e % p.out_c;
    var r = e / p.out_c;
    let c = r % p.in_c;
    r = r / p.in_c;
    let j = r % p.k_w;
    let i = r / p.k_w;
    var acc = 0.0;
    let b_end = min((s + 1u) * p.slice_images, p.batch);
    for (var b = s * p.slice_images; b < b_end; b++) {
        for (var oy = 0u; oy < p.out_h; oy++) {
            let iy = fine_from_coarse(oy, i, p.stride, p.pad_top, p.in_h);
            if iy < 0 { continue; }
            for (var ox = 0u; ox < p.out_w; ox++) {
                let ix = fine_from_coarse(ox, j, p.stride, p.pad_left, p.in_w);
                if ix < 0 { continue; }
                let xv = x[((b * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.in_c + c];
                acc += xv * dy[((b * p.out_h + oy) * p.out_w + ox) * p.out_c + f];
            }
        }
    }
    part[idx] = acc;
}

// Bindings: p, partial_sums, grads. Grid: one invocation per kernel element.
// One invocation: grads[w_off + e] = sum over slices of partial_sums[s][e], in slice
// order. Every split kernel gradient (portable and blocked, of Conv2D,
// Conv2DTranspose and Dense) ends with it.
@compute @workgroup_size(WG)
fn conv2d_backward_kernel_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = linear_id(wid, nwg, lid);
    let len = p.k_h * p.k_w * p.in_c * p.out_c;
    if e >= len { return; }
    var acc = 0.0;
    for (var s = 0u; s < p.slices; s++) {
        acc += partial_sums[s * len + e];
    }
    grads[p.w_off + e] = acc;
}
