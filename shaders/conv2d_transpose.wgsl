// Conv2DTranspose, TensorFlow's: the adjoint of the Conv2D with the same fields.
// Twin of src/cpu/conv2d_transpose.rs.
// x: [B, H, W, C]; kernel [kh, kw, F, C] at params[w_off] (Keras: [kh, kw, out, in]);
// bias [F] at params[b_off]; y: [B, OH, OW, F].
// Input (iy, ix) reaches output (iy*s + i - pad_top, ix*s + j - pad_left).
// Every entry point gathers: taps that would land on inserted zeros are skipped,
// so only true multiply-adds are done.

struct Conv {
    batch: u32, in_h: u32, in_w: u32, in_c: u32,
    out_h: u32, out_w: u32, out_c: u32, k_h: u32,
    k_w: u32, stride: u32, pad_top: u32, pad_left: u32,
    w_off: u32, b_off: u32, relu: u32, bias: u32,
    slice_images: u32, slices: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(16) var<storage, read_write> part_out: array<f32>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 64u + lid.x;
}

// The output row/column that input position q reaches through tap k, or -1 outside.
fn tap(q: u32, k: u32, pad: u32, len: u32) -> i32 {
    let o = i32(q * p.stride + k) - i32(pad);
    return select(-1, o, o >= 0 && o < i32(len));
}

// The input position whose tap k lands on output o, or -1 (outside, or between inputs).
fn source(o: u32, k: u32, pad: u32, len: u32) -> i32 {
    let t = i32(o + pad) - i32(k);
    if t < 0 || t % i32(p.stride) != 0 { return -1; }
    let q = t / i32(p.stride);
    return select(-1, q, q < i32(len));
}

@compute @workgroup_size(64)
fn conv2d_transpose_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
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
        let iy = source(oy, i, p.pad_top, p.in_h);
        if iy < 0 { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let ix = source(ox, j, p.pad_left, p.in_w);
            if ix < 0 { continue; }
            let xb = ((b * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.in_c;
            let wb = p.w_off + ((i * p.k_w + j) * p.out_c + f) * p.in_c;
            for (var c = 0u; c < p.in_c; c++) {
                acc += x[xb + c] * params[wb + c];
            }
        }
    }
    if p.relu != 0u { acc = max(acc, 0.0); }
    y[idx] = acc;
}

// dx[b, iy, ix, c] = sum over taps and f of dy[b, oy, ox, f] * kernel[i, j, f, c].
@compute @workgroup_size(64)
fn conv2d_transpose_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
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
        let oy = tap(iy, i, p.pad_top, p.out_h);
        if oy < 0 { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let ox = tap(ix, j, p.pad_left, p.out_w);
            if ox < 0 { continue; }
            let db = ((b * p.out_h + u32(oy)) * p.out_w + u32(ox)) * p.out_c;
            let wb = p.w_off + (i * p.k_w + j) * p.out_c * p.in_c + c;
            for (var f = 0u; f < p.out_c; f++) {
                acc += dy[db + f] * params[wb + f * p.in_c];
            }
        }
    }
    dx[idx] = acc;
}

// Partial kernel gradients of slice s of the batch: part[s][i, j, f, c] = sum over
// the slice's images and inputs of dy[tap] * x; conv2d_backward_kernel_reduce
// (conv2d.wgsl) adds the slices. Slicing keeps an invocation under llvmpipe's
// budget of 65535 loop iterations (all loops together).
@compute @workgroup_size(64)
fn conv2d_transpose_backward_kernel(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let len = p.k_h * p.k_w * p.out_c * p.in_c;
    let idx = linear_id(wid, nwg, lid);
    if idx >= len * p.slices { return; }
    let s = idx / len;
    let e = idx % len;
    let c = e % p.in_c;
    var r = e / p.in_c;
    let f = r % p.out_c;
    r = r / p.out_c;
    let j = r % p.k_w;
    let i = r / p.k_w;
    var acc = 0.0;
    let b_end = min((s + 1u) * p.slice_images, p.batch);
    for (var b = s * p.slice_images; b < b_end; b++) {
        for (var iy = 0u; iy < p.in_h; iy++) {
            let oy = tap(iy, i, p.pad_top, p.out_h);
            if oy < 0 { continue; }
            for (var ix = 0u; ix < p.in_w; ix++) {
                let ox = tap(ix, j, p.pad_left, p.out_w);
                if ox < 0 { continue; }
                acc += dy[((b * p.out_h + u32(oy)) * p.out_w + u32(ox)) * p.out_c + f] * x[((b * p.in_h + iy) * p.in_w + ix) * p.in_c + c];
            }
        }
    }
    part_out[idx] = acc;
}
