// Register-blocked convolution kernels: each invocation computes 4 images x 4 channels
// of output from vec4 loads along the channel axis, so every value loaded from a
// storage buffer feeds 4 multiply-adds instead of 1 (loads, not arithmetic, bound
// these kernels on lavapipe). They need no optional feature.
//
// Three layer kinds use them, through src/gpu/ops.rs:
// - Conv2D: forward, input gradient and kernel gradient as written here;
// - Conv2DTranspose: its forward pass is the adjoint Conv2D's input gradient and its
//   input gradient is that Conv2D's forward pass (ConvGeom::as_forward_conv);
// - Dense: a 1x1 Conv2D of a 1x1 image (ConvGeom::dense).
// So their CPU twins are src/cpu/conv2d.rs, conv2d_transpose.rs and dense.rs, through
// the same geometry. The geometry below is the Conv2D's: x [B, H, W, C] is the fine side,
// y [B, OH, OW, F] the coarse side (prelude.wgsl); kernel [kh, kw, C, F] at w_off,
// bias [F] at b_off, both in `w4` (w_off is a multiple of 4).
//
// The `_scalar` entry points take an input side whose channel count is not a multiple
// of 4 (the 1-channel image, a latent of 50): input values are read one at a time,
// each still feeding a vec4 of output channels.

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> part4: array<vec4<f32>>;

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

// v.x * w0 + v.y * w1 + v.z * w2 + v.w * w3: a vec4 of inputs against 4 kernel rows.
fn rows4(v: vec4<f32>, w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>) -> vec4<f32> {
    return v.x * w0 + v.y * w1 + v.z * w2 + v.w * w3;
}

// (d . w0, d . w1, d . w2, d . w3): a vec4 of output gradients against 4 kernel rows.
fn dots4(d: vec4<f32>, w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(d, w0), dot(d, w1), dot(d, w2), dot(d, w3));
}

// The bias of channel ch (b_off need not be a multiple of 4).
fn bias_of(ch: u32) -> f32 {
    let i = p.b_off + ch;
    return w4[i / 4u][i % 4u];
}

// Bias (when p.bias != 0) and ReLU (when p.relu != 0) of channels ch..ch+4.
fn finish(acc: vec4<f32>, ch: u32) -> vec4<f32> {
    var v = acc;
    if p.bias != 0u { v += vec4<f32>(bias_of(ch), bias_of(ch + 1u), bias_of(ch + 2u), bias_of(ch + 3u)); }
    if p.relu != 0u { v = max(v, vec4<f32>(0.0)); }
    return v;
}

// The same for one channel.
fn finish1(acc: f32, ch: u32) -> f32 {
    var v = acc;
    if p.bias != 0u { v += bias_of(ch); }
    if p.relu != 0u { v = max(v, 0.0); }
    return v;
}

// Store the 4 images' vec4 at pixel `pix` of planes `plane` vec4s long, channel block k4
// of n4: into y4, or into dx4. Images past the batch are not stored.
fn store_y4(b0: u32, plane: u32, pix: u32, n4: u32, k4: u32, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>) {
    y4[(b0 * plane + pix) * n4 + k4] = finish(a0, k4 * 4u);
    if b0 + 1u < p.batch { y4[((b0 + 1u) * plane + pix) * n4 + k4] = finish(a1, k4 * 4u); }
    if b0 + 2u < p.batch { y4[((b0 + 2u) * plane + pix) * n4 + k4] = finish(a2, k4 * 4u); }
    if b0 + 3u < p.batch { y4[((b0 + 3u) * plane + pix) * n4 + k4] = finish(a3, k4 * 4u); }
}

fn store_dx4(b0: u32, plane: u32, pix: u32, n4: u32, k4: u32, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>) {
    dx4[(b0 * plane + pix) * n4 + k4] = finish(a0, k4 * 4u);
    if b0 + 1u < p.batch { dx4[((b0 + 1u) * plane + pix) * n4 + k4] = finish(a1, k4 * 4u); }
    if b0 + 2u < p.batch { dx4[((b0 + 2u) * plane + pix) * n4 + k4] = finish(a2, k4 * 4u); }
    if b0 + 3u < p.batch { dx4[((b0 + 3u) * plane + pix) * n4 + k4] = finish(a3, k4 * 4u); }
}

// Bindings: p, x4, w4, y4. Grid: one invocation per 4 images x output pixel x 4 channels.
// One invocation: y[b..b+4, oy, ox, f..f+4] = sum over taps and c of x * kernel[i, j, c, f].
@compute @workgroup_size(WG)
fn conv2d_forward_blocked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let f4n = p.out_c / 4u;
    let c4n = p.in_c / 4u;
    let idx = linear_id(wid, nwg, lid);
    if idx >= (p.batch + 3u) / 4u * p.out_h * p.out_w * f4n { return; }
    let q = pixel_block(idx, f4n, p.out_w, p.out_h);
    let f4 = q.x;
    let bs = images4(q.w);
    let wbase = p.w_off / 4u;
    let plane = p.in_h * p.in_w;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var i = 0u; i < p.k_h; i++) {
        let iy = fine_from_coarse(q.z, i, p.stride, p.pad_top, p.in_h);
        if iy < 0 { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let ix = fine_from_coarse(q.y, j, p.stride, p.pad_left, p.in_w);
            if ix < 0 { continue; }
            let xb = (bs * plane + u32(iy) * p.in_w + u32(ix)) * c4n;
            let t = (i * p.k_w + j) * p.in_c;
            for (var c4 = 0u; c4 < c4n; c4++) {
                let wr = wbase + (t + c4 * 4u) * f4n + f4;
                let w0 = w4[wr];
                let w1 = w4[wr + f4n];
                let w2 = w4[wr + 2u * f4n];
                let w3 = w4[wr + 3u * f4n];
                a0 += rows4(x4[xb.x + c4], w0, w1, w2, w3);
                a1 += rows4(x4[xb.y + c4], w0, w1, w2, w3);
                a2 += rows4(x4[xb.z + c4], w0, w1, w2, w3);
                a3 += rows4(x4[xb.w + c4], w0, w1, w2, w3);
            }
        }
    }
    store_y4(bs.x, p.out_h * p.out_w, q.z * p.out_w + q.y, f4n, f4, a0, a1, a2, a3);
}

// Bindings: p, w4, dy4, dx4. Grid: one invocation per 4 images x input pixel x 4 channels.
// One invocation: dx[b..b+4, iy, ix, c..c+4] = sum over the outputs that read (iy, ix)
// of dy . kernel[i, j, c, :].
@compute @workgroup_size(WG)
fn conv2d_backward_input_blocked(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let f4n = p.out_c / 4u;
    let c4n = p.in_c / 4u;
    let idx = linear_id(wid, nwg, lid);
    if idx >= (p.batch + 3u) / 4u * p.in_h * p.in_w * c4n { return; }
    let q = pixel_block(idx, c4n, p.in_w, p.in_h);
    let c4 = q.x;
    let bs = images4(q.w);
    let wbase = p.w_off / 4u;
    let plane = p.out_h * p.out_w;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var i = 0u; i < p.k_h; i++) {
        let oy = coarse_from_fine(q.z, i, p.stride, p.pad_top, p.out_h);
        if oy < 0 { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let ox = coarse_from_fine(q.y, j, p.stride, p.pad_left, p.out_w);
            if ox < 0 { continue; }
            let db = (bs * plane + u32(oy) * p.out_w + u32(ox)) * f4n;
            // Kernel rows (i, j, c + q, :) for q = 0..3, each out_c long.
            let wr = wbase + ((i * p.k_w + j) * p.in_c + c4 * 4u) * f4n;
            for (var f4 = 0u; f4 < f4n; f4++) {
                let w0 = w4[wr + f4];
                let w1 = w4[wr + f4n + f4];
                let w2 = w4[wr + 2u * f4n + f4];
                let w3 = w4[wr + 3u * f4n + f4];
                a0 += dots4(dy4[db.x + f4], w0, w1, w2, w3);
                a1 += dots4(dy4[db.y + f4], w0, w1, w2, w3);
                a2 += dots4(dy4[db.z + f4], w0, w1, w2, w3);
                a3 += dots4(dy4[db.w + f4], w0, w1, w2, w3);
            }
        }
    }
    store_dx4(bs.x, p.in_h * p.in_w, q.z * p.in_w + q.y, c4n, c4, a0, a1, a2, a3);
}

// Bindings: p, x4, dy4, part4. Grid: one invocation per 4 input x 4 output channels of
// a kernel tap, per batch slice.
// One invocation: part[s][i, j, c..c+4, f..f+4] = sum over slice s's images and the
// outputs of x[tap] (outer) dy: two vec4 loads feed 16 multiply-adds. Reading a few
// images many times from cache beats streaming the whole batch per block; slices also
// keep the invocation under llvmpipe's budget of 65535 loop iterations.
// conv2d_backward_kernel_reduce (conv2d.wgsl) adds the slices.
@compute @workgroup_size(WG)
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
            let iy = fine_from_coarse(oy, i, p.stride, p.pad_top, p.in_h);
            if iy < 0 { continue; }
            for (var ox = 0u; ox < p.out_w; ox++) {
                let ix = fine_from_coarse(ox, j, p.stride, p.pad_left, p.in_w);
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

// Bindings: p, x, w4, y4. Grid and result as conv2d_forward_blocked, reading x as scalars.
@compute @workgroup_size(WG)
fn conv2d_forward_blocked_scalar(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let f4n = p.out_c / 4u;
    let idx = linear_id(wid, nwg, lid);
    if idx >= (p.batch + 3u) / 4u * p.out_h * p.out_w * f4n { return; }
    let q = pixel_block(idx, f4n, p.out_w, p.out_h);
    let f4 = q.x;
    let bs = images4(q.w);
    let plane = p.in_h * p.in_w * p.in_c;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var i = 0u; i < p.k_h; i++) {
        let iy = fine_from_coarse(q.z, i, p.stride, p.pad_top, p.in_h);
        if iy < 0 { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let ix = fine_from_coarse(q.y, j, p.stride, p.pad_left, p.in_w);
            if ix < 0 { continue; }
            let xb = bs * plane + (u32(iy) * p.in_w + u32(ix)) * p.in_c;
            let wr = p.w_off / 4u + (i * p.k_w + j) * p.in_c * f4n + f4;
            for (var c = 0u; c < p.in_c; c++) {
                let w = w4[wr + c * f4n];
                a0 += x[xb.x + c] * w;
                a1 += x[xb.y + c] * w;
                a2 += x[xb.z + c] * w;
                a3 += x[xb.w + c] * w;
            }
        }
    }
    store_y4(bs.x, p.out_h * p.out_w, q.z * p.out_w + q.y, f4n, f4, a0, a1, a2, a3);
}

// Bindings: p, w4, dy4, dx. Grid: one invocation per 4 images x input pixel x 1 channel.
// One invocation: as conv2d_backward_input_blocked for one input channel.
@compute @workgroup_size(WG)
fn conv2d_backward_input_blocked_scalar(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let f4n = p.out_c / 4u;
    let idx = linear_id(wid, nwg, lid);
    if idx >= (p.batch + 3u) / 4u * p.in_h * p.in_w * p.in_c { return; }
    let q = pixel_block(idx, p.in_c, p.in_w, p.in_h);
    let c = q.x;
    let bs = images4(q.w);
    let plane = p.out_h * p.out_w;
    var a = vec4<f32>(0.0);
    for (var i = 0u; i < p.k_h; i++) {
        let oy = coarse_from_fine(q.z, i, p.stride, p.pad_top, p.out_h);
        if oy < 0 { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let ox = coarse_from_fine(q.y, j, p.stride, p.pad_left, p.out_w);
            if ox < 0 { continue; }
            let db = (bs * plane + u32(oy) * p.out_w + u32(ox)) * f4n;
            let wr = p.w_off / 4u + ((i * p.k_w + j) * p.in_c + c) * f4n;
            for (var f4 = 0u; f4 < f4n; f4++) {
                let w = w4[wr + f4];
                a += vec4<f32>(dot(dy4[db.x + f4], w), dot(dy4[db.y + f4], w), dot(dy4[db.z + f4], w), dot(dy4[db.w + f4], w));
            }
        }
    }
    let ipix = (q.z * p.in_w + q.y) * p.in_c + c;
    let iplane = p.in_h * p.in_w * p.in_c;
    dx[bs.x * iplane + ipix] = finish1(a.x, c);
    if bs.x + 1u < p.batch { dx[(bs.x + 1u) * iplane + ipix] = finish1(a.y, c); }
    if bs.x + 2u < p.batch { dx[(bs.x + 2u) * iplane + ipix] = finish1(a.z, c); }
    if bs.x + 3u < p.batch { dx[(bs.x + 3u) * iplane + ipix] = finish1(a.w, c); }
}

// Bindings: p, x, dy4, part4. Grid: one invocation per input channel x 16 output
// channels of a kernel tap, per batch slice (needs out_c % 16 == 0).
// One invocation: as conv2d_backward_kernel_blocked for one input channel and 16 output
// channels: one scalar and four vec4 loads feed 16 multiply-adds.
@compute @workgroup_size(WG)
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
            let iy = fine_from_coarse(oy, i, p.stride, p.pad_top, p.in_h);
            if iy < 0 { continue; }
            for (var ox = 0u; ox < p.out_w; ox++) {
                let ix = fine_from_coarse(ox, j, p.stride, p.pad_left, p.in_w);
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
    part4[row] = a0;
    part4[row + 1u] = a1;
    part4[row + 2u] = a2;
    part4[row + 3u] = a3;
}
