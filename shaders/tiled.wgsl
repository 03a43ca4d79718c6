// Convolution kernels for GPUs: the standard shape of fast WebGPU matrix kernels.
// A workgroup of 16 x 16 invocations owns a 64 x 64 tile of the output; each
// invocation holds 4 rows x 4 columns (a vec4) in registers. The operands come
// through workgroup memory, 16 reduction steps at a time: every invocation loads one
// vec4 of each operand's slab (coalesced across the workgroup), a barrier, then 16
// steps of 4 vec4 multiply-adds from workgroup memory. Within wgpu's default limits
// (256 invocations, 8 KiB of the 16 KiB of workgroup storage), no optional feature.
// On lavapipe workgroup memory and barriers are slow (no better than a storage load);
// there these kernels are checked for correctness, and chosen only if they win.
//
// Each op is the implicit GEMM out[m, n] = sum over k of a[m, k] * b[k, n] of
// subgroup.wgsl, with the same index maps; the geometry is a Conv2D's (x fine side
// [B, H, W, C], y coarse side [B, OH, OW, F], kernel [kh, kw, C, F]), so Conv2D,
// Conv2DTranspose (through the adjoint) and Dense (1x1) all use them.

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> dy4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> dx4: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> part4: array<vec4<f32>>;

// The a slab, k-major: a_s[k * 16 + i] holds rows 4 i .. 4 i + 4 at reduction step k.
var<workgroup> a_s: array<vec4<f32>, 256>;
// The b slab: b_s[k * 16 + j] holds columns 4 j .. 4 j + 4 at reduction step k.
var<workgroup> b_s: array<vec4<f32>, 256>;

fn x_at(i: u32) -> f32 { return x4[i / 4u][i % 4u]; }
fn dy_at(i: u32) -> f32 { return dy4[i / 4u][i % 4u]; }

// One output element of a 64 x 64 tile owned by this invocation's 4 rows x 4 columns,
// accumulated over the reduction; the op's loaders fill the slabs.
struct Tile { r0: u32, c0: u32, t: vec2<u32> }

fn tile(wg: vec3<u32>, lid: vec3<u32>) -> Tile {
    return Tile(wg.y * 64u, wg.x * 64u, lid.xy);
}

// 16 reduction steps from the slabs into the invocation's accumulators (rows 4 ty..),
// one matrix column a row: an array here would carry naga's ArrayStride, which Vulkan
// forbids on function-local variables (tests/naga_portability.rs).
fn multiply(t: vec2<u32>, acc: ptr<function, mat4x4<f32>>) {
    for (var k = 0u; k < 16u; k++) {
        let a = a_s[k * 16u + t.y];
        let b = b_s[k * 16u + t.x];
        (*acc)[0] = fma(vec4<f32>(a.x), b, (*acc)[0]);
        (*acc)[1] = fma(vec4<f32>(a.y), b, (*acc)[1]);
        (*acc)[2] = fma(vec4<f32>(a.z), b, (*acc)[2]);
        (*acc)[3] = fma(vec4<f32>(a.w), b, (*acc)[3]);
    }
}

// Store a slab entry: element q of a vec4 loaded for (row r, reduction step k).
fn put_a(k: u32, r: u32, v: f32) {
    a_s[k * 16u + r / 4u][r % 4u] = v;
}

// Bias (when p.bias != 0) and ReLU (when p.relu != 0) of channels c .. c + 4 of n.
fn finish(acc: vec4<f32>, c: u32, n: u32) -> vec4<f32> {
    var v = acc;
    if p.bias != 0u {
        v += vec4<f32>(params[p.b_off + min(c, n - 1u)], params[p.b_off + min(c + 1u, n - 1u)],
                       params[p.b_off + min(c + 2u, n - 1u)], params[p.b_off + min(c + 3u, n - 1u)]);
    }
    if p.relu != 0u { v = max(v, vec4<f32>(0.0)); }
    return v;
}

// x at output pixel m's window tap and channel (the forward's a[m, k]), or 0 outside.
fn im2col(m: u32, k: u32) -> f32 {
    let k_total = p.k_h * p.k_w * p.in_c;
    let m_total = p.batch * p.out_h * p.out_w;
    let tap = k / p.in_c;
    let iy = i32((m / p.out_w) % p.out_h * p.stride + tap / p.k_w) - i32(p.pad_top);
    let ix = i32(m % p.out_w * p.stride + tap % p.k_w) - i32(p.pad_left);
    let ok = m < m_total && k < k_total && iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w);
    let idx = ((m / (p.out_h * p.out_w) * p.in_h + u32(iy)) * p.in_w + u32(ix)) * p.in_c + k % p.in_c;
    return select(0.0, x_at(select(0u, idx, ok)), ok);
}

// a[m, k .. k + 4] of the forward (k a multiple of 4): one vec4 load when the four steps
// are four channels of one tap (C % 4 == 0), else four scalars.
fn im2col4(m: u32, k: u32) -> vec4<f32> {
    if p.in_c % 4u != 0u {
        return vec4<f32>(im2col(m, k), im2col(m, k + 1u), im2col(m, k + 2u), im2col(m, k + 3u));
    }
    let k_total = p.k_h * p.k_w * p.in_c;
    let m_total = p.batch * p.out_h * p.out_w;
    let tap = k / p.in_c;
    let iy = i32((m / p.out_w) % p.out_h * p.stride + tap / p.k_w) - i32(p.pad_top);
    let ix = i32(m % p.out_w * p.stride + tap % p.k_w) - i32(p.pad_left);
    let ok = m < m_total && k < k_total && iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w);
    let idx = ((m / (p.out_h * p.out_w) * p.in_h + u32(iy)) * p.in_w + u32(ix)) * (p.in_c / 4u) + k % p.in_c / 4u;
    return select(vec4<f32>(0.0), x4[select(0u, idx, ok)], ok);
}

// Bindings: p, x4, params, y4. Grid: (ceil(F / 64), ceil(B * OH * OW / 64)) workgroups.
// One invocation: y = act(bias + im2col(x) kernel) for 4 output pixels x 4 channels.
@compute @workgroup_size(16, 16)
fn conv2d_forward_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let tl = tile(wg, lid);
    let k_total = p.k_h * p.k_w * p.in_c;
    let m_total = p.batch * p.out_h * p.out_w;
    var acc: mat4x4<f32>;
    for (var k0 = 0u; k0 < k_total; k0 += 16u) {
        // a slab: 64 pixels x 16 steps, 4 steps per invocation.
        let r = li / 4u;
        let a = im2col4(tl.r0 + r, k0 + 4u * (li % 4u));
        for (var q = 0u; q < 4u; q++) { put_a(4u * (li % 4u) + q, r, a[q]); }
        // b slab: 16 steps x 64 channels, 4 channels per invocation.
        let k = k0 + li / 16u;
        let c = tl.c0 + 4u * (li % 16u);
        var b = vec4<f32>(0.0);
        for (var q = 0u; q < 4u; q++) {
            if k < k_total && c + q < p.out_c { b[q] = params[p.w_off + k * p.out_c + c + q]; }
        }
        b_s[li] = b;
        workgroupBarrier();
        multiply(tl.t, &acc);
        workgroupBarrier();
    }
    let c = tl.c0 + 4u * tl.t.x;
    for (var i = 0u; i < 4u; i++) {
        let m = tl.r0 + 4u * tl.t.y + i;
        let v = finish(acc[i], c, p.out_c);
        for (var q = 0u; q < 4u; q++) {
            let e = m * p.out_c + c + q;
            if m < m_total && c + q < p.out_c { y4[e / 4u][e % 4u] = v[q]; }
        }
    }
}

// The fine-side rows and columns of one phase (see subgroup.wgsl): iy = phase_y +
// stride * qy; their taps i = i0 + stride * ti reach coarse row oy = ey + qy - ti.
struct Phase { n: vec2<u32>, taps: vec2<u32>, i0: vec2<u32>, e: vec2<u32> }

fn phase() -> Phase {
    let s = p.stride;
    let r = vec2<u32>(p.phase_y, p.phase_x);
    let len = vec2<u32>(p.in_h, p.in_w);
    let kern = vec2<u32>(p.k_h, p.k_w);
    let pad = vec2<u32>(p.pad_top, p.pad_left);
    let n = select(vec2<u32>(0u), (len - r + s - 1u) / s, r < len);
    let i0 = (r + pad) % s;
    let taps = select(vec2<u32>(0u), (kern - i0 + s - 1u) / s, i0 < kern);
    return Phase(n, taps, i0, (r + pad) / s);
}

// Bindings: p, dy4, params, dx4. Grid: (ceil(C / 64), ceil(B * rows * cols of the phase
// / 64)) workgroups, one dispatch per phase (p.phase_y, p.phase_x) of the stride.
// One invocation: dx = act(bias + sum over the phase's taps and f of dy * kernel) for 4
// fine-side pixels x 4 channels (bias and ReLU serve Conv2DTranspose's forward).
@compute @workgroup_size(16, 16)
fn conv2d_backward_input_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let tl = tile(wg, lid);
    let ph = phase();
    let m_total = p.batch * ph.n.x * ph.n.y;
    let k_total = ph.taps.x * ph.taps.y * p.out_c;
    var acc: mat4x4<f32>;
    for (var k0 = 0u; k0 < k_total; k0 += 16u) {
        let r = li / 4u;
        let m = tl.r0 + r;
        let b = m / max(ph.n.x * ph.n.y, 1u);
        let qy = (m / max(ph.n.y, 1u)) % max(ph.n.x, 1u);
        let qx = m % max(ph.n.y, 1u);
        for (var q = 0u; q < 4u; q++) {
            let k = k0 + 4u * (li % 4u) + q;
            let t = k / p.out_c;
            let oy = i32(ph.e.x + qy) - i32(t / max(ph.taps.y, 1u));
            let ox = i32(ph.e.y + qx) - i32(t % max(ph.taps.y, 1u));
            let ok = m < m_total && k < k_total && oy >= 0 && oy < i32(p.out_h) && ox >= 0 && ox < i32(p.out_w);
            let idx = ((b * p.out_h + u32(oy)) * p.out_w + u32(ox)) * p.out_c + k % p.out_c;
            put_a(4u * (li % 4u) + q, r, select(0.0, dy_at(select(0u, idx, ok)), ok));
        }
        let k = k0 + li / 16u;
        let t = k / p.out_c;
        let tap = (ph.i0.x + p.stride * (t / max(ph.taps.y, 1u))) * p.k_w + ph.i0.y + p.stride * (t % max(ph.taps.y, 1u));
        let c = tl.c0 + 4u * (li % 16u);
        var bv = vec4<f32>(0.0);
        for (var q = 0u; q < 4u; q++) {
            if k < k_total && c + q < p.in_c { bv[q] = params[p.w_off + (tap * p.in_c + c + q) * p.out_c + k % p.out_c]; }
        }
        b_s[li] = bv;
        workgroupBarrier();
        multiply(tl.t, &acc);
        workgroupBarrier();
    }
    let c = tl.c0 + 4u * tl.t.x;
    for (var i = 0u; i < 4u; i++) {
        let m = tl.r0 + 4u * tl.t.y + i;
        let b = m / max(ph.n.x * ph.n.y, 1u);
        let iy = p.phase_y + p.stride * ((m / max(ph.n.y, 1u)) % max(ph.n.x, 1u));
        let ix = p.phase_x + p.stride * (m % max(ph.n.y, 1u));
        let v = finish(acc[i], c, p.in_c);
        for (var q = 0u; q < 4u; q++) {
            let e = ((b * p.in_h + iy) * p.in_w + ix) * p.in_c + c + q;
            if m < m_total && c + q < p.in_c { dx4[e / 4u][e % 4u] = v[q]; }
        }
    }
}

// Bindings: p, x4, dy4, part4. Grid: (ceil(F / 64), ceil(K / 64) * slices) workgroups,
// K = kh * kw * C.
// One invocation: part[slice][k, f] = sum over the slice's output pixels m of
// im2col(x)[m, k] * dy[m, f] for 4 kernel rows x 4 channels; the reduction runs over
// pixels, 16 at a time. conv2d_backward_kernel_reduce (conv2d.wgsl) adds the slices.
@compute @workgroup_size(16, 16)
fn conv2d_backward_kernel_tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let k_total = p.k_h * p.k_w * p.in_c;
    let row_tiles = (k_total + 63u) / 64u;
    let slice = wg.y / row_tiles;
    let tl = Tile((wg.y % row_tiles) * 64u, wg.x * 64u, lid.xy);
    let plane = p.out_h * p.out_w;
    let m_begin = slice * p.slice_images * plane;
    let m_end = min((slice + 1u) * p.slice_images, p.batch) * plane;
    var acc: mat4x4<f32>;
    for (var m0 = m_begin; m0 < m_end; m0 += 16u) {
        // a slab: 16 pixels (the reduction) x 64 kernel rows, 4 rows per invocation.
        let mm = m0 + li / 16u;
        let mc = min(mm, m_end - 1u);
        let a = im2col4(mc, tl.r0 + 4u * (li % 16u));
        a_s[(li / 16u) * 16u + li % 16u] = select(vec4<f32>(0.0), a, mm < m_end);
        // b slab: 16 pixels x 64 channels of dy.
        let c = tl.c0 + 4u * (li % 16u);
        var bv = vec4<f32>(0.0);
        for (var q = 0u; q < 4u; q++) {
            if mm < m_end && c + q < p.out_c { bv[q] = dy_at(mc * p.out_c + c + q); }
        }
        b_s[li] = bv;
        workgroupBarrier();
        multiply(tl.t, &acc);
        workgroupBarrier();
    }
    let c = tl.c0 + 4u * tl.t.x;
    for (var i = 0u; i < 4u; i++) {
        let k = tl.r0 + 4u * tl.t.y + i;
        for (var q = 0u; q < 4u; q++) {
            let e = (slice * k_total + k) * p.out_c + c + q;
            if k < k_total && c + q < p.out_c { part4[e / 4u][e % 4u] = acc[i][q]; }
        }
    }
}
