// Conv2DTranspose, TensorFlow's: the adjoint of the Conv2D with the same fields.
// Twin of src/cpu/conv2d_transpose.rs.
// x: [B, H, W, C]; kernel [kh, kw, F, C] at params[w_off] (Keras: [kh, kw, out, in]);
// bias [F] at params[b_off]; y: [B, OH, OW, F].
// Input (iy, ix) reaches output (iy*s + i - pad_top, ix*s + j - pad_left): the input
// is the coarse side (prelude.wgsl). Every entry point gathers: taps that would land
// on inserted zeros are skipped, so only true multiply-adds are done.
// The blocked kernels of blocked.wgsl serve this layer too, through the adjoint Conv2D.

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<storage, read_write> part: array<f32>;

// Bindings: p, x, params, y. Grid: one invocation per output element.
// One invocation: y[b, oy, ox, f] = act(bias[f] + sum over the inputs that reach (oy, ox)
// of x * kernel).
@compute @workgroup_size(WG)
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
        let iy = coarse_from_fine(oy, i, p.stride, p.pad_top, p.in_h);
        if iy < 0 { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let ix = coarse_from_fine(ox, j, p.stride, p.pad_left, p.in_w);
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

// Bindings: p, params, dy, dx. Grid: one invocation per input element.
// One invocation: dx[b, iy, ix, c] = sum over taps and f of dy[b, oy, ox, f] * kernel[i, j, f, c].
@compute @workgroup_size(WG)
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
        let oy = fine_from_coarse(iy, i, p.stride, p.pad_top, p.out_h);
        if oy < 0 { continue; }
        for (var j = 0u; j < p.k_w; j++) {
            let ox = fine_from_coarse(ix, j, p.stride, p.pad_left, p.out_w);
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

// Bindings: p, x, dy, part. Grid: one invocation per kernel element and batch slice.
// One invocation: part[s][i, j, f, c] = sum over slice s's images and inputs of
// dy[tap] * x; conv2d_backward_kernel_reduce (conv2d.wgsl) adds the slices. Slicing
// keeps an invocation under llvmpipe's budget of 65535 loop iterations (all loops together).
@compute @workgroup_size(WG)
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
            let oy = fine_from_coarse(iy, i, p.stride, p.pad_top, p.out_h);
            if oy < 0 { continue; }
            for (var ix = 0u; ix < p.in_w; ix++) {
                let ox = fine_from_coarse(ix, j, p.stride, p.pad_left, p.out_w);
                if ox < 0 { continue; }
                let dv = dy[((b * p.out_h + u32(oy)) * p.out_w + u32(ox)) * p.out_c + f];
                acc += dv * x[((b * p.in_h + iy) * p.in_w + ix) * p.in_c + c];
            }
        }
    }
    part[idx] = acc;
}
