// Conv2D with TensorFlow's padding. Twin of src/cpu/conv2d.rs.
// x: [B, H, W, C]; kernel [kh, kw, C, F] at params[w_off]; bias [F] at params[b_off];
// y: [B, OH, OW, F]. Output (oy, ox) reads input (oy*s + i - pad_top, ox*s + j - pad_left).

struct Conv {
    batch: u32, in_h: u32, in_w: u32, in_c: u32,
    out_h: u32, out_w: u32, out_c: u32, k_h: u32,
    k_w: u32, stride: u32, pad_top: u32, pad_left: u32,
    w_off: u32, b_off: u32, relu: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> grads: array<f32>;

// Dispatches are 2-D when a 1-D grid would pass the 65535-workgroup limit.
fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 64u + lid.x;
}

// The input row/column that output o meets through tap k, or -1 outside.
fn tap(o: u32, k: u32, pad: u32, len: u32) -> i32 {
    let q = i32(o * p.stride + k) - i32(pad);
    return select(-1, q, q >= 0 && q < i32(len));
}

@compute @workgroup_size(64)
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
        let iy = tap(oy, i, p.pad_top, p.in_h);
        if iy < 0 { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let ix = tap(ox, j, p.pad_left, p.in_w);
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

// dx[b, iy, ix, c]: sum over the outputs that read (iy, ix) of dy * kernel.
@compute @workgroup_size(64)
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
        let ty = i32(iy + p.pad_top) - i32(i);
        if ty < 0 || ty % i32(p.stride) != 0 { continue; }
        let oy = u32(ty) / p.stride;
        if oy >= p.out_h { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let tx = i32(ix + p.pad_left) - i32(j);
            if tx < 0 || tx % i32(p.stride) != 0 { continue; }
            let ox = u32(tx) / p.stride;
            if ox >= p.out_w { continue; }
            let db = ((b * p.out_h + oy) * p.out_w + ox) * p.out_c;
            let wb = p.w_off + ((i * p.k_w + j) * p.in_c + c) * p.out_c;
            for (var f = 0u; f < p.out_c; f++) {
                acc += dy[db + f] * params[wb + f];
            }
        }
    }
    dx[idx] = acc;
}

// dkernel[i, j, c, f] = sum over batch and outputs of x[tap] * dy, into grads[w_off].
@compute @workgroup_size(64)
fn conv2d_backward_kernel(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = linear_id(wid, nwg, lid);
    if idx >= p.k_h * p.k_w * p.in_c * p.out_c { return; }
    let f = idx % p.out_c;
    var r = idx / p.out_c;
    let c = r % p.in_c;
    r = r / p.in_c;
    let j = r % p.k_w;
    let i = r / p.k_w;
    var acc = 0.0;
    for (var b = 0u; b < p.batch; b++) {
        for (var oy = 0u; oy < p.out_h; oy++) {
            let iy = tap(oy, i, p.pad_top, p.in_h);
            if iy < 0 { continue; }
            for (var ox = 0u; ox < p.out_w; ox++) {
                let ix = tap(ox, j, p.pad_left, p.in_w);
                if ix < 0 { continue; }
                acc += x[((b * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.in_c + c] * dy[((b * p.out_h + oy) * p.out_w + ox) * p.out_c + f];
            }
        }
    }
    grads[p.w_off + idx] = acc;
}
