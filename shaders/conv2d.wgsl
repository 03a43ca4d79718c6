// Conv2D with TensorFlow's padding. Twin of src/cpu/conv2d.rs.
// x: [B, H, W, C]; kernel [kh, kw, C, F] at params[w_off]; bias [F] at params[b_off];
// y: [B, OH, OW, F]. Output (oy, ox) reads input (oy*s + i - pad_top, ox*s + j - pad_left).

struct Conv {
    batch: u32, in_h: u32, in_w: u32, in_c: u32,
    out_h: u32, out_w: u32, out_c: u32, k_h: u32,
    k_w: u32, stride: u32, pad_top: u32, pad_left: u32,
    w_off: u32, b_off: u32, relu: u32,
    // Blocked kernels: add the bias (1) or not (0).
    bias: u32,
    // Blocked kernel gradient: images per slice of the batch, and the slice count.
    slice_images: u32, slices: u32, _p0: u32, _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(6) var<storage, read_write> grads: array<f32>;
@group(0) @binding(16) var<storage, read_write> part_out: array<f32>;

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

// Partial kernel gradients of slice s of the batch: part[s][i, j, c, f] = sum over
// the slice's images and outputs of x[tap] * dy. conv2d_backward_kernel_reduce then
// adds the slices in order into grads[w_off]. Slicing keeps an invocation under
// llvmpipe's budget of 65535 loop iterations (all loops together), which one
// pass over a large batch would exceed.
@compute @workgroup_size(64)
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
            let iy = tap(oy, i, p.pad_top, p.in_h);
            if iy < 0 { continue; }
            for (var ox = 0u; ox < p.out_w; ox++) {
                let ix = tap(ox, j, p.pad_left, p.in_w);
                if ix < 0 { continue; }
                acc += x[((b * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.in_c + c] * dy[((b * p.out_h + oy) * p.out_w + ox) * p.out_c + f];
            }
        }
    }
    part_out[idx] = acc;
}

// ---------------------------------------------------------------------------
// Blocked variants. Each invocation computes 4 images x 4 channels of output
// from vec4 loads along the channel axis, so every value loaded from a storage
// buffer feeds 4 multiply-adds instead of 1 (loads, not arithmetic, bound these
// kernels). They need in_c and out_c divisible by 4 and a kernel offset divisible
// by 4; the launcher falls back to the kernels above otherwise. The same three
// entry points also serve Conv2DTranspose (whose forward pass is this conv's input
// gradient, and the other way round) and Dense (a 1x1 conv on a 1x1 image).
// `p.relu` applies ReLU to the output; `p.bias != 0` adds the bias first.

@group(0) @binding(7) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(10) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(11) var<storage, read_write> dx4: array<vec4<f32>>;

// A blocked invocation's output: (channel block, column, row, first of 4 images),
// channel block fastest.
fn pixel_block(idx: u32, blocks: u32, w: u32, h: u32) -> vec4<u32> {
    let r = idx / blocks;
    return vec4<u32>(idx % blocks, r % w, (r / w) % h, (r / w / h) * 4u);
}

// The 4 images of a block; images past the batch read the last one and are not stored.
fn images4(b0: u32) -> vec4<u32> {
    return vec4<u32>(b0, min(b0 + 1u, p.batch - 1u), min(b0 + 2u, p.batch - 1u), min(b0 + 3u, p.batch - 1u));
}

fn finish(acc: vec4<f32>, ch: u32) -> vec4<f32> {
    var v = acc;
    if p.bias != 0u {
        v += vec4<f32>(params[p.b_off + ch], params[p.b_off + ch + 1u], params[p.b_off + ch + 2u], params[p.b_off + ch + 3u]);
    }
    if p.relu != 0u { v = max(v, vec4<f32>(0.0)); }
    return v;
}

// y[b..b+4, oy, ox, f..f+4] = sum over taps and c of x * kernel[i, j, c, f].
@compute @workgroup_size(64)
fn conv2d_forward_blocked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let f4n = p.out_c / 4u;
    let c4n = p.in_c / 4u;
    let idx = linear_id(wid, nwg, lid);
    if idx >= (p.batch + 3u) / 4u * p.out_h * p.out_w * f4n { return; }
    let q = pixel_block(idx, f4n, p.out_w, p.out_h);
    let f4 = q.x;
    let ox = q.y;
    let oy = q.z;
    let bs = images4(q.w);
    let b0 = bs.x;
    let b1 = bs.y;
    let b2 = bs.z;
    let b3 = bs.w;
    let wbase = p.w_off / 4u;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var i = 0u; i < p.k_h; i++) {
        let iy = tap(oy, i, p.pad_top, p.in_h);
        if iy < 0 { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let ix = tap(ox, j, p.pad_left, p.in_w);
            if ix < 0 { continue; }
            let pix = u32(iy) * p.in_w + u32(ix);
            let plane = p.in_h * p.in_w;
            let t = (i * p.k_w + j) * p.in_c;
            for (var c4 = 0u; c4 < c4n; c4++) {
                let xa = x4[(b0 * plane + pix) * c4n + c4];
                let xb = x4[(b1 * plane + pix) * c4n + c4];
                let xc = x4[(b2 * plane + pix) * c4n + c4];
                let xd = x4[(b3 * plane + pix) * c4n + c4];
                let wr = wbase + (t + c4 * 4u) * f4n + f4;
                let w0 = w4[wr];
                let w1 = w4[wr + f4n];
                let w2 = w4[wr + 2u * f4n];
                let w3 = w4[wr + 3u * f4n];
                a0 += xa.x * w0 + xa.y * w1 + xa.z * w2 + xa.w * w3;
                a1 += xb.x * w0 + xb.y * w1 + xb.z * w2 + xb.w * w3;
                a2 += xc.x * w0 + xc.y * w1 + xc.z * w2 + xc.w * w3;
                a3 += xd.x * w0 + xd.y * w1 + xd.z * w2 + xd.w * w3;
            }
        }
    }
    let opix = oy * p.out_w + ox;
    let oplane = p.out_h * p.out_w;
    y4[(b0 * oplane + opix) * f4n + f4] = finish(a0, f4 * 4u);
    if b0 + 1u < p.batch { y4[((b0 + 1u) * oplane + opix) * f4n + f4] = finish(a1, f4 * 4u); }
    if b0 + 2u < p.batch { y4[((b0 + 2u) * oplane + opix) * f4n + f4] = finish(a2, f4 * 4u); }
    if b0 + 3u < p.batch { y4[((b0 + 3u) * oplane + opix) * f4n + f4] = finish(a3, f4 * 4u); }
}

// dx[b..b+4, iy, ix, c..c+4] = sum over the outputs that read (iy, ix) of dy . kernel[i, j, c, :].
@compute @workgroup_size(64)
fn conv2d_backward_input_blocked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let f4n = p.out_c / 4u;
    let c4n = p.in_c / 4u;
    let idx = linear_id(wid, nwg, lid);
    if idx >= (p.batch + 3u) / 4u * p.in_h * p.in_w * c4n { return; }
    let q = pixel_block(idx, c4n, p.in_w, p.in_h);
    let c4 = q.x;
    let ix = q.y;
    let iy = q.z;
    let bs = images4(q.w);
    let b0 = bs.x;
    let b1 = bs.y;
    let b2 = bs.z;
    let b3 = bs.w;
    let wbase = p.w_off / 4u;
    let plane = p.out_h * p.out_w;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
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
            let pix = oy * p.out_w + ox;
            // Kernel rows (i, j, c + q, :) for q = 0..3, each out_c long.
            let wr = wbase + ((i * p.k_w + j) * p.in_c + c4 * 4u) * f4n;
            for (var f4 = 0u; f4 < f4n; f4++) {
                let da = dy4[(b0 * plane + pix) * f4n + f4];
                let db = dy4[(b1 * plane + pix) * f4n + f4];
                let dc = dy4[(b2 * plane + pix) * f4n + f4];
                let dd = dy4[(b3 * plane + pix) * f4n + f4];
                let w0 = w4[wr + f4];
                let w1 = w4[wr + f4n + f4];
                let w2 = w4[wr + 2u * f4n + f4];
                let w3 = w4[wr + 3u * f4n + f4];
                a0 += vec4<f32>(dot(da, w0), dot(da, w1), dot(da, w2), dot(da, w3));
                a1 += vec4<f32>(dot(db, w0), dot(db, w1), dot(db, w2), dot(db, w3));
                a2 += vec4<f32>(dot(dc, w0), dot(dc, w1), dot(dc, w2), dot(dc, w3));
                a3 += vec4<f32>(dot(dd, w0), dot(dd, w1), dot(dd, w2), dot(dd, w3));
            }
        }
    }
    let ipix = iy * p.in_w + ix;
    let iplane = p.in_h * p.in_w;
    dx4[(b0 * iplane + ipix) * c4n + c4] = finish(a0, c4 * 4u);
    if b0 + 1u < p.batch { dx4[((b0 + 1u) * iplane + ipix) * c4n + c4] = finish(a1, c4 * 4u); }
    if b0 + 2u < p.batch { dx4[((b0 + 2u) * iplane + ipix) * c4n + c4] = finish(a2, c4 * 4u); }
    if b0 + 3u < p.batch { dx4[((b0 + 3u) * iplane + ipix) * c4n + c4] = finish(a3, c4 * 4u); }
}

// Partial kernel gradients, one slice of the batch per set: reading a few images
// many times from cache beats streaming the whole batch from memory per output block.
@group(0) @binding(13) var<storage, read_write> part4: array<vec4<f32>>;
@group(0) @binding(14) var<storage, read> part: array<f32>;

// part[s][i, j, c..c+4, f..f+4] = sum over the images of slice s and the outputs of
// x[tap] (outer) dy: two vec4 loads feed 16 multiply-adds. Slices also keep the
// invocation under llvmpipe's budget of 65535 loop iterations.
@compute @workgroup_size(64)
fn conv2d_backward_kernel_blocked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let f4n = p.out_c / 4u;
    let c4n = p.in_c / 4u;
    let per_slice = p.k_h * p.k_w * c4n * f4n;
    let idx = linear_id(wid, nwg, lid);
    if idx >= per_slice * p.slices { return; }
    let s = idx / per_slice;
    let f4 = idx % f4n;
    var r = (idx % per_slice) / f4n;
    let c4 = r % c4n;
    r = r / c4n;
    let j = r % p.k_w;
    let i = r / p.k_w;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    let b_end = min((s + 1u) * p.slice_images, p.batch);
    for (var b = s * p.slice_images; b < b_end; b++) {
        for (var oy = 0u; oy < p.out_h; oy++) {
            let iy = tap(oy, i, p.pad_top, p.in_h);
            if iy < 0 { continue; }
            for (var ox = 0u; ox < p.out_w; ox++) {
                let ix = tap(ox, j, p.pad_left, p.in_w);
                if ix < 0 { continue; }
                let xv = x4[((b * p.in_h + u32(iy)) * p.in_w + u32(ix)) * c4n + c4];
                let d = dy4[((b * p.out_h + oy) * p.out_w + ox) * f4n + f4];
                a0 += xv.x * d;
                a1 += xv.y * d;
                a2 += xv.z * d;
                a3 += xv.w * d;
            }
        }
    }
    let row = s * per_slice * 4u + ((i * p.k_w + j) * p.in_c + c4 * 4u) * f4n + f4;
    part4[row] = a0;
    part4[row + f4n] = a1;
    part4[row + 2u * f4n] = a2;
    part4[row + 3u * f4n] = a3;
}

// grads[w_off + e] = sum over slices of part[s][e], in slice order.
@compute @workgroup_size(64)
fn conv2d_backward_kernel_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = linear_id(wid, nwg, lid);
    let len = p.k_h * p.k_w * p.in_c * p.out_c;
    if e >= len { return; }
    var acc = 0.0;
    for (var s = 0u; s < p.slices; s++) {
        acc += part[s * len + e];
    }
    grads[p.w_off + e] = acc;
}

// ---------------------------------------------------------------------------
// Blocked variants for an input side whose channel count is not a multiple of 4
// (the 1-channel image, or a latent of 50): input values are read one at a time,
// each still feeding a vec4 of output channels. They need out_c divisible by 4
// (by 16 for the kernel gradient).

@group(0) @binding(15) var<storage, read_write> part16: array<vec4<f32>>;

// As conv2d_forward_blocked, reading x as scalars.
@compute @workgroup_size(64)
fn conv2d_forward_blocked_scalar(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let f4n = p.out_c / 4u;
    let idx = linear_id(wid, nwg, lid);
    if idx >= (p.batch + 3u) / 4u * p.out_h * p.out_w * f4n { return; }
    let q = pixel_block(idx, f4n, p.out_w, p.out_h);
    let f4 = q.x;
    let ox = q.y;
    let oy = q.z;
    let bs = images4(q.w);
    let b0 = bs.x;
    let b1 = bs.y;
    let b2 = bs.z;
    let b3 = bs.w;
    let plane = p.in_h * p.in_w * p.in_c;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var i = 0u; i < p.k_h; i++) {
        let iy = tap(oy, i, p.pad_top, p.in_h);
        if iy < 0 { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let ix = tap(ox, j, p.pad_left, p.in_w);
            if ix < 0 { continue; }
            let pix = (u32(iy) * p.in_w + u32(ix)) * p.in_c;
            let wr = p.w_off / 4u + (i * p.k_w + j) * p.in_c * f4n + f4;
            for (var c = 0u; c < p.in_c; c++) {
                let w = w4[wr + c * f4n];
                a0 += x[b0 * plane + pix + c] * w;
                a1 += x[b1 * plane + pix + c] * w;
                a2 += x[b2 * plane + pix + c] * w;
                a3 += x[b3 * plane + pix + c] * w;
            }
        }
    }
    let opix = oy * p.out_w + ox;
    let oplane = p.out_h * p.out_w;
    y4[(b0 * oplane + opix) * f4n + f4] = finish(a0, f4 * 4u);
    if b0 + 1u < p.batch { y4[((b0 + 1u) * oplane + opix) * f4n + f4] = finish(a1, f4 * 4u); }
    if b0 + 2u < p.batch { y4[((b0 + 2u) * oplane + opix) * f4n + f4] = finish(a2, f4 * 4u); }
    if b0 + 3u < p.batch { y4[((b0 + 3u) * oplane + opix) * f4n + f4] = finish(a3, f4 * 4u); }
}

fn finish1(acc: f32, ch: u32) -> f32 {
    var v = acc;
    if p.bias != 0u { v += params[p.b_off + ch]; }
    if p.relu != 0u { v = max(v, 0.0); }
    return v;
}

// As conv2d_backward_input_blocked, one input channel per invocation (4 images).
@compute @workgroup_size(64)
fn conv2d_backward_input_blocked_scalar(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let f4n = p.out_c / 4u;
    let idx = linear_id(wid, nwg, lid);
    if idx >= (p.batch + 3u) / 4u * p.in_h * p.in_w * p.in_c { return; }
    let q = pixel_block(idx, p.in_c, p.in_w, p.in_h);
    let c = q.x;
    let ix = q.y;
    let iy = q.z;
    let bs = images4(q.w);
    let b0 = bs.x;
    let b1 = bs.y;
    let b2 = bs.z;
    let b3 = bs.w;
    let plane = p.out_h * p.out_w;
    var a = vec4<f32>(0.0);
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
            let pix = oy * p.out_w + ox;
            let wr = p.w_off / 4u + ((i * p.k_w + j) * p.in_c + c) * f4n;
            for (var f4 = 0u; f4 < f4n; f4++) {
                let w = w4[wr + f4];
                a += vec4<f32>(dot(dy4[(b0 * plane + pix) * f4n + f4], w), dot(dy4[(b1 * plane + pix) * f4n + f4], w), dot(dy4[(b2 * plane + pix) * f4n + f4], w), dot(dy4[(b3 * plane + pix) * f4n + f4], w));
            }
        }
    }
    let ipix = (iy * p.in_w + ix) * p.in_c + c;
    let iplane = p.in_h * p.in_w * p.in_c;
    dx[b0 * iplane + ipix] = finish1(a.x, c);
    if b0 + 1u < p.batch { dx[(b0 + 1u) * iplane + ipix] = finish1(a.y, c); }
    if b0 + 2u < p.batch { dx[(b0 + 2u) * iplane + ipix] = finish1(a.z, c); }
    if b0 + 3u < p.batch { dx[(b0 + 3u) * iplane + ipix] = finish1(a.w, c); }
}

// As conv2d_backward_kernel_blocked for one input channel and 16 output channels
// per invocation: one scalar and four vec4 loads feed 16 multiply-adds.
// Partial sums per batch slice go to part16; conv2d_backward_kernel_reduce adds them.
@compute @workgroup_size(64)
fn conv2d_backward_kernel_blocked_scalar(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let f4n = p.out_c / 4u;
    let f16n = p.out_c / 16u;
    let per_slice = p.k_h * p.k_w * p.in_c * f16n;
    let idx = linear_id(wid, nwg, lid);
    if idx >= per_slice * p.slices { return; }
    let s = idx / per_slice;
    let f16 = idx % f16n;
    var r = (idx % per_slice) / f16n;
    let c = r % p.in_c;
    r = r / p.in_c;
    let j = r % p.k_w;
    let i = r / p.k_w;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    let b_end = min((s + 1u) * p.slice_images, p.batch);
    for (var b = s * p.slice_images; b < b_end; b++) {
        for (var oy = 0u; oy < p.out_h; oy++) {
            let iy = tap(oy, i, p.pad_top, p.in_h);
            if iy < 0 { continue; }
            for (var ox = 0u; ox < p.out_w; ox++) {
                let ix = tap(ox, j, p.pad_left, p.in_w);
                if ix < 0 { continue; }
                let xv = x[((b * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.in_c + c];
                let d = ((b * p.out_h + oy) * p.out_w + ox) * f4n + f16 * 4u;
                a0 += xv * dy4[d];
                a1 += xv * dy4[d + 1u];
                a2 += xv * dy4[d + 2u];
                a3 += xv * dy4[d + 3u];
            }
        }
    }
    let row = s * per_slice * 4u + ((i * p.k_w + j) * p.in_c + c) * f4n + f16 * 4u;
    part16[row] = a0;
    part16[row + 1u] = a1;
    part16[row + 2u] = a2;
    part16[row + 3u] = a3;
}
