// Convolution kernels for adapters with 8-lane subgroups (lavapipe, the software
// Vulkan driver, on a 256-bit host), where a storage load costs far more than
// arithmetic and a texture load is vectorised. Offered only where the adapter has
// `Features::SUBGROUP` with subgroups of exactly 8 (src/gpu/plan.rs checks).
//
// Each op is an implicit GEMM, out[m, n] = sum over k of a[m, k] * b[k, n], never
// materialised. A subgroup's 8 lanes own 8 vec4 columns of n (32 output channels);
// an invocation holds 32 rows (m) x 4 columns in registers. Per 32 steps of k each
// lane loads ONE vec4 of a per row, and subgroupBroadcast hands every lane the other
// lanes' values: one storage load feeds 32 multiply-adds per row. The weights come
// through a texture (textureLoad is a vector gather in llvmpipe), packed once per
// step from the flat parameter buffer by pack_weights / pack_weights_transposed.
// No invocation returns early: subgroupBroadcast needs every lane; indices are
// clamped and only stores are guarded.
//
// Like blocked.wgsl, the three ops serve Conv2D, Conv2DTranspose (through the adjoint
// Conv2D) and Dense (a 1x1 Conv2D) alike; the geometry below is the Conv2D's: x is the
// fine side [B, H, W, C], y the coarse side [B, OH, OW, F], kernel [kh, kw, C, F].
// `//#unroll NAME N` repeats lines N times with {NAME} = 0..N-1 (src/gpu/kernels.rs).

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read> params: array<f32>;
@group(0) @binding(2) var wtex: texture_2d<f32>;
@group(0) @binding(3) var wtex_out: texture_storage_2d<rgba32float, write>;
@group(0) @binding(6) var<storage, read_write> y4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> dx4: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> part4: array<vec4<f32>>;
@group(0) @binding(10) var xtex: texture_2d<f32>;
@group(0) @binding(11) var dytex: texture_2d<f32>;

// A texture (rgba32float) holds its matrix of vec4 rows, or its vector of scalars four
// a texel, in the order of the buffer it was copied from, wrapped at rows of 8192 texels (the most a
// texture side may have; src/gpu/ops.rs: TEXTURE_ROW): a lane finds its texel with a
// shift and a mask.

// The texel of row k, vec4 column c4 of a matrix with `cols4` vec4 columns.
fn texel(k: u32, c4: u32, cols4: u32) -> vec2<u32> {
    return texel1(k * cols4 + c4);
}

// Texel i.
fn texel1(i: u32) -> vec2<u32> {
    return vec2<u32>(i & 8191u, i >> 13u);
}

// Element i of an activation whose channels do not come in fours (a vector gather, as
// for the vec4 rows).
fn x_at(i: u32) -> f32 { return textureLoad(xtex, texel1(i >> 2u), 0)[i & 3u]; }
fn dy_at(i: u32) -> f32 { return textureLoad(dytex, texel1(i >> 2u), 0)[i & 3u]; }

// Whether the fine side's channels (x, dx: C) come in fours, and the coarse side's (y,
// dy: F): a row is then whole texels, read and written a vec4 at a time; otherwise
// four scalars. The GEMM kernels' main forms are written for channels in fours (`true`,
// which the driver folds away: the scalar paths, inlined into every row of the
// register block, made lavapipe take twice as long to build each pipeline); their
// _any forms ask these at run time.
fn c_vec4() -> bool { return p.in_c % 4u == 0u; }
fn f_vec4() -> bool { return p.out_c % 4u == 0u; }

// The bias of channels 4 c4 .. 4 c4 + 4 of `n` (zero when p.bias == 0). Loaded once
// per invocation: a load between the row stores would be repeated for every row.
fn bias4(c4: u32, n: u32) -> vec4<f32> {
    if p.bias == 0u { return vec4<f32>(0.0); }
    let c = 4u * c4;
    return vec4<f32>(params[p.b_off + min(c, n - 1u)], params[p.b_off + min(c + 1u, n - 1u)],
                     params[p.b_off + min(c + 2u, n - 1u)], params[p.b_off + min(c + 3u, n - 1u)]);
}

// Bias `b` (when p.bias != 0, from bias4) and ReLU (when p.relu != 0) of one output vec4.
fn finish(acc: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    var v = acc;
    if p.bias != 0u { v += b; }
    if p.relu != 0u { v = max(v, vec4<f32>(0.0)); }
    return v;
}

// Bindings: p, params, wtex_out. Grid: one invocation per texel.
// One invocation: texel (k, f4) of the kernel as a K x F matrix (row k = tap * C + c),
// K = kh * kw * C: what conv2d_forward_subgroup multiplies by.
@compute @workgroup_size(WG)
fn pack_weights(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let f4s = (p.out_c + 3u) / 4u;
    let rows = p.k_h * p.k_w * p.in_c;
    let idx = linear_id(wid, nwg, lid);
    if idx >= rows * f4s { return; }
    let k = idx / f4s;
    let f = 4u * (idx % f4s);
    var v = vec4<f32>(0.0);
    for (var q = 0u; q < 4u; q++) {
        if f + q < p.out_c { v[q] = params[p.w_off + k * p.out_c + f + q]; }
    }
    textureStore(wtex_out, texel(k, idx % f4s, f4s), v);
}

// Kernel taps (ky, kx) with ky % stride < a among the first n rows (or columns).
fn count_below(n: u32, a: u32) -> u32 {
    return (n / p.stride) * a + min(n % p.stride, a);
}

// The transposed weight texture holds the taps by phase class (ky % stride, kx % stride),
// the classes one after another in row-major order, each class's taps (ky / stride,
// kx / stride) row-major: a phase's reduction rows are then consecutive, and a kernel
// finds row k of its phase at first row + k, with no division in its inner loop.
// The taps stored before class `i0`, which has `taps_y` taps along y.
fn taps_before(i0: vec2<u32>, taps_y: u32) -> u32 {
    return count_below(p.k_h, i0.x) * p.k_w + taps_y * count_below(p.k_w, i0.y);
}

// Bindings: p, params, wtex_out. Grid: one invocation per texel.
// One invocation: texel (k, c4) of the kernel as a (kh * kw * F) x C matrix, the taps
// in phase-class order (taps_before), row k = tap * F + f: what
// conv2d_backward_input_subgroup multiplies by.
@compute @workgroup_size(WG)
fn pack_weights_transposed(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let c4s = (p.in_c + 3u) / 4u;
    let rows = p.k_h * p.k_w * p.out_c;
    let idx = linear_id(wid, nwg, lid);
    if idx >= rows * c4s { return; }
    let k = idx / c4s;
    let tap = k / p.out_c;
    let f = k % p.out_c;
    let c = 4u * (idx % c4s);
    var v = vec4<f32>(0.0);
    for (var q = 0u; q < 4u; q++) {
        if c + q < p.in_c { v[q] = params[p.w_off + (tap * p.in_c + c + q) * p.out_c + f]; }
    }
    let s = p.stride;
    let ky = tap / p.k_w;
    let kx = tap % p.k_w;
    let cls = vec2<u32>(ky % s, kx % s);
    let taps_y = (p.k_h - cls.x + s - 1u) / s;
    let taps_x = (p.k_w - cls.y + s - 1u) / s;
    let t = taps_before(cls, taps_y) + (ky / s) * taps_x + kx / s;
    textureStore(wtex_out, texel(t * p.out_c + f, idx % c4s, c4s), v);
}

// Bindings: p, dytex (a copy of dy), xtex (a copy of y), dx4, part4. Grid: one
// invocation per vec4 column and block of RELU_ROWS rows.
// One invocation: rows 64 j .. 64 j + 64, vec4 column c4 of a ReLU layer's output
// gradient dy (p.batch rows of p.in_c vec4s), zero where the layer's output y is not
// positive, into dx4 (dy's buffer: masked in place), and their sum into row j of part4:
// the bias gradient's partial sums, which bias_backward adds up. One pass where the
// mask and the bias gradient took two; both operands through textures (per-lane
// storage loads took 5 times as long); a copy then takes the masked dy to the texture
// the layer's gradient kernels read.
const RELU_ROWS: u32 = 64u;
@compute @workgroup_size(WG)
fn relu_mask_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = linear_id(wid, nwg, lid);
    let blocks = (p.batch + RELU_ROWS - 1u) / RELU_ROWS;
    if idx >= blocks * p.in_c { return; }
    let j = idx / p.in_c;
    let c4 = idx % p.in_c;
    var sum = vec4<f32>(0.0);
    for (var r = j * RELU_ROWS; r < min((j + 1u) * RELU_ROWS, p.batch); r++) {
        let t = texel(r, c4, p.in_c);
        let d = select(vec4<f32>(0.0), textureLoad(dytex, t, 0), textureLoad(xtex, t, 0) > vec4<f32>(0.0));
        dx4[r * p.in_c + c4] = d;
        sum += d;
    }
    part4[idx] = sum;
}

// Kernel rows 4 k4 .. 4 k4 + 4 as taps (ti, tj) and channels c, and whether each row
// exists: worked out once per step of the reduction or per invocation, outside the
// loops over pixels.
struct KernelRows { ti: vec4<i32>, tj: vec4<i32>, c: vec4<u32>, live: vec4<bool> }

// Built by its constructor, never as a `var`: naga gives every struct explicit offsets,
// which Vulkan forbids on function-local variables (tests/naga_portability.rs).
fn kernel_rows(k4: u32) -> KernelRows {
    let k_total = p.k_h * p.k_w * p.in_c;
    let k = vec4<u32>(4u * k4) + vec4<u32>(0u, 1u, 2u, 3u);
    let tap = k / vec4<u32>(p.in_c);
    return KernelRows(vec4<i32>(tap / vec4<u32>(p.k_w)), vec4<i32>(tap % vec4<u32>(p.k_w)), k % vec4<u32>(p.in_c), k < vec4<u32>(k_total));
}

// The image and coarse pixel (b, oy, ox) of output pixel m.
fn coarse_pos(m: u32) -> vec3<u32> {
    return vec3<u32>(m / (p.out_h * p.out_w), (m / p.out_w) % p.out_h, m % p.out_w);
}

// The pixel (b, row, col) after `pos` in images of dims = (rows, cols), by compares and
// selects: a kernel's 32 consecutive rows find their pixels from the first one's, where
// a vector integer division per row (slow on a SIMD CPU) would cost more than a short
// reduction's multiply-adds.
fn next_pixel(pos: vec3<u32>, dims: vec2<u32>) -> vec3<u32> {
    var q = pos;
    q.z += 1u;
    let wrap_x = q.z == dims.y;
    q.z = select(q.z, 0u, wrap_x);
    q.y += u32(wrap_x);
    let wrap_y = q.y == dims.x;
    q.y = select(q.y, 0u, wrap_y);
    q.x += u32(wrap_y);
    return q;
}

// The pixel of row r + 1 given that of row r (`pos`), rows past `m_total` - 1 repeating the last.
fn next_row(pos: vec3<u32>, r: u32, m_total: u32, dims: vec2<u32>) -> vec3<u32> {
    return select(next_pixel(pos, dims), pos, r + 1u >= m_total);
}

// Where the window of the output pixel at `pos` starts: (first row of its image, row, column).
fn window(pos: vec3<u32>) -> vec3<i32> {
    return vec3<i32>(i32(pos.x * p.in_h), i32(pos.y * p.stride) - i32(p.pad_top), i32(pos.z * p.stride) - i32(p.pad_left));
}

// im2col(x) at the output pixel whose window is `w` (see `window`), kernel rows `r`:
// x where those rows (tap, c) meet the window, zero outside the image or where `ok_m`
// is false; one vec4 load when C % 4 == 0, otherwise four scalars.
fn gather_x(w: vec3<i32>, ok_m: bool, r: KernelRows, vec4s: bool) -> vec4<f32> {
    let bh = u32(w.x);
    if vec4s {
        let iy = w.y + r.ti.x;
        let ix = w.z + r.tj.x;
        let ok = ok_m && r.live.x && iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w);
        let pix = select(0u, (bh + u32(iy)) * p.in_w + u32(ix), ok);
        return select(vec4<f32>(0.0), textureLoad(xtex, texel(pix, r.c.x / 4u, p.in_c / 4u), 0), ok);
    }
    var v = vec4<f32>(0.0);
    for (var q = 0u; q < 4u; q++) {
        let iy = w.y + r.ti[q];
        let ix = w.z + r.tj[q];
        let ok = ok_m && r.live[q] && iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w);
        let idx = ((bh + u32(iy)) * p.in_w + u32(ix)) * p.in_c + r.c[q];
        v[q] = select(0.0, x_at(select(0u, idx, ok)), ok);
    }
    return v;
}

// Store vec4 column c4 of output row m (of `n` channels), when inside.
fn store_y(m: u32, m_total: u32, c4: u32, n: u32, v: vec4<f32>, vec4s: bool) {
    if m >= m_total || 4u * c4 >= n { return; }
    if vec4s {
        y4[m * (n / 4u) + c4] = v;
        return;
    }
    for (var q = 0u; q < 4u; q++) {
        let i = m * n + 4u * c4 + q;
        if 4u * c4 + q < n { y4[i / 4u][i % 4u] = v[q]; }
    }
}

// Bindings: p, xtex, wtex, params, y4. Grid: (ceil(F / (32 W)), ceil(B * OH * OW / 4 R))
// workgroups of 4 subgroups; subgroup s of workgroup (gx, gy) owns output pixels
// R (4 gy + s) .. +R, its lane l channels 4 (8 (W gx + v) + l) .. +4 for v < W.
// One invocation: y = act(bias + im2col(x) kernel) for its R pixels x 4 W channels.
// Two forms: W = 1 with R = 32, and W = 2 with R = 16 (_wide, for 64 channels and
// more), where each broadcast value of x feeds two multiply-adds instead of one: on
// lavapipe a broadcast costs about as much as a multiply-add. Its register block stays
// the size of the 4-channel form's: 32 rows of it were no faster and took 2.5 times as
// long to compile (3.8 s against 1.5 s, and 1.2 s against 0.2 s to build with warm caches).
// Both for channels in fours on both sides (CV, FV: c_vec4); a third, _any (W = 1,
// R = 8), for any channel counts: small layers (a Dense layer reading a latent vector
// of 50 or 2), and a small register block, cheap to build.
//#forms W:R:WIDE:CV:FV 1:32::true:true 2:16:_wide:true:true 1:8:_any:c_vec4():f_vec4()
@compute @workgroup_size(32)
fn conv2d_forward_subgroup{WIDE}(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let f4s = (p.out_c + 3u) / 4u;
    let m_total = p.batch * p.out_h * p.out_w;
    let k_total = p.k_h * p.k_w * p.in_c;
    let kq_total = (k_total + 3u) / 4u;
    //#unroll V {W}
    let col{V} = (wg.x * {W}u + {V}u) * 8u + li % 8u;
    let f4_{V} = min(col{V}, f4s - 1u);
    //#end
    let r0 = (wg.y * 4u + li / 8u) * {R}u;
    var pos = coarse_pos(min(r0, m_total - 1u));
    //#unroll I {R}
    let w{I} = window(pos);
    pos = next_row(pos, r0 + {I}u, m_total, vec2<u32>(p.out_h, p.out_w));
    //#unroll V {W}
    var acc{I}_{V} = vec4<f32>(0.0);
    //#end
    //#end
    for (var k0 = 0u; k0 < kq_total; k0 += 8u) {
        // This lane's vec4 of the reduction: its taps and channels, worked out once
        // for all 32 rows (a vector integer division is slow on a SIMD CPU).
        let rows = kernel_rows(k0 + lane);
        //#unroll I {R}
        let a{I} = gather_x(w{I}, true, rows, {CV});
        //#end
        //#unroll J 8
        //#unroll C 4
        let k{J}{C} = min(4u * (k0 + {J}u) + {C}u, k_total - 1u);
        //#unroll V {W}
        let b{J}{C}_{V} = textureLoad(wtex, texel(k{J}{C}, f4_{V}, f4s), 0);
        //#end
        //#unroll I {R}
        {
            let s = vec4<f32>(subgroupBroadcast(a{I}[{C}], {J}u));
            //#unroll V {W}
            acc{I}_{V} = fma(s, b{J}{C}_{V}, acc{I}_{V});
            //#end
        }
        //#end
        //#end
        //#end
    }
    //#unroll V {W}
    let bias{V} = bias4(f4_{V}, p.out_c);
    //#end
    //#unroll I {R}
    //#unroll V {W}
    store_y(r0 + {I}u, m_total, col{V}, p.out_c, finish(acc{I}_{V}, bias{V}), {FV});
    //#end
    //#end
}
//#end

// Row m' of the input gradient's A operand at reduction index 4 kq .. 4 kq + 4: dy at
// the coarse pixel (oy0 - ti, ox0 - tj) that this phase's tap (ti, tj) reaches from
// m', channels 4 f4 .. +4 (F % 4 == 0), or four scalars (t, f) otherwise.
fn gather_dy(bo: u32, oy0: i32, ox0: i32, kq: u32, lane_tap: vec3<u32>, taps: vec2<u32>, vec4s: bool) -> vec4<f32> {
    let k_total = taps.x * taps.y * p.out_c;
    if vec4s {
        let oy = oy0 - i32(lane_tap.x);
        let ox = ox0 - i32(lane_tap.y);
        let ok = 4u * kq < k_total && oy >= 0 && oy < i32(p.out_h) && ox >= 0 && ox < i32(p.out_w);
        let pix = select(0u, (bo + u32(oy)) * p.out_w + u32(ox), ok);
        return select(vec4<f32>(0.0), textureLoad(dytex, texel(pix, lane_tap.z, p.out_c / 4u), 0), ok);
    }
    var v = vec4<f32>(0.0);
    for (var q = 0u; q < 4u; q++) {
        let k = 4u * kq + q;
        let t = k / p.out_c;
        let oy = oy0 - i32(t / taps.y);
        let ox = ox0 - i32(t % taps.y);
        let ok = k < k_total && oy >= 0 && oy < i32(p.out_h) && ox >= 0 && ox < i32(p.out_w);
        let idx = ((bo + u32(oy)) * p.out_w + u32(ox)) * p.out_c + k % p.out_c;
        v[q] = select(0.0, dy_at(select(0u, idx, ok)), ok);
    }
    return v;
}

// Store vec4 column c4 of input-gradient row (b, iy, ix), when inside.
fn store_dx(b: u32, iy: u32, ix: u32, ok: bool, c4: u32, v: vec4<f32>, vec4s: bool) {
    if !ok || 4u * c4 >= p.in_c { return; }
    let m = (b * p.in_h + iy) * p.in_w + ix;
    if vec4s {
        dx4[m * (p.in_c / 4u) + c4] = v;
        return;
    }
    for (var q = 0u; q < 4u; q++) {
        let i = m * p.in_c + 4u * c4 + q;
        if 4u * c4 + q < p.in_c { dx4[i / 4u][i % 4u] = v[q]; }
    }
}

// The fine-side rows and columns of one phase: iy = phase_y + stride * qy. Their taps
// are i = i0 + stride * ti, and they reach coarse row oy = ey + qy - ti.
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

// The image and phase pixel (b, qy, qx) of row m of a phase's input gradient.
fn phase_pixel(m: u32, ph: Phase) -> vec3<u32> {
    return vec3<u32>(m / (ph.n.x * ph.n.y), (m / ph.n.y) % ph.n.x, m % ph.n.y);
}

// Bindings: p, dytex, wtex (packed by pack_weights_transposed), params, dx4. Grid:
// (ceil(C / (32 W)), ceil(B * rows * cols of the phase / 4 R)) workgroups; one dispatch
// per phase (p.phase_y, p.phase_x) of the stride, so every row of an invocation meets
// the same taps. Rows, lanes and the forms (W = 1, R = 32; W = 2, R = 16: _wide; _any) as
// conv2d_forward_subgroup.
// One invocation: dx = act(bias + sum over the phase's taps and f of dy * kernel) for
// its R fine-side pixels x 4 W channels (bias and ReLU serve Conv2DTranspose's forward).
//#forms W:R:WIDE:CV:FV 1:32::true:true 2:16:_wide:true:true 1:8:_any:c_vec4():f_vec4()
@compute @workgroup_size(32)
fn conv2d_backward_input_subgroup{WIDE}(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let ph = phase();
    let c4s = (p.in_c + 3u) / 4u;
    let m_total = p.batch * ph.n.x * ph.n.y;
    let k_total = ph.taps.x * ph.taps.y * p.out_c;
    let kq_total = (k_total + 3u) / 4u;
    // The phase's rows of the transposed kernel: reduction index k is row w_rows + k.
    let w_rows = taps_before(ph.i0, ph.taps.x) * p.out_c;
    //#unroll V {W}
    let col{V} = (wg.x * {W}u + {V}u) * 8u + li % 8u;
    let c4_{V} = min(col{V}, c4s - 1u);
    //#end
    let r0 = (wg.y * 4u + li / 8u) * {R}u;
    var pos = phase_pixel(min(r0, m_total - 1u), ph);
    //#unroll I {R}
    let b{I} = pos.x;
    let qy{I} = pos.y;
    let qx{I} = pos.z;
    pos = next_row(pos, r0 + {I}u, m_total, ph.n);
    let bo{I} = b{I} * p.out_h;
    let oy{I} = i32(ph.e.x + qy{I});
    let ox{I} = i32(ph.e.y + qx{I});
    //#unroll V {W}
    var acc{I}_{V} = vec4<f32>(0.0);
    //#end
    //#end
    for (var k0 = 0u; k0 < kq_total; k0 += 8u) {
        let kq = k0 + lane;
        let f4s = max(p.out_c / 4u, 1u);
        let t = kq / f4s;
        let lane_tap = vec3<u32>(t / max(ph.taps.y, 1u), t % max(ph.taps.y, 1u), kq % f4s);
        //#unroll I {R}
        let a{I} = gather_dy(bo{I}, oy{I}, ox{I}, kq, lane_tap, ph.taps, {FV});
        //#end
        //#unroll J 8
        //#unroll C 4
        let k{J}{C} = w_rows + min(4u * (k0 + {J}u) + {C}u, k_total - 1u);
        //#unroll V {W}
        let w{J}{C}_{V} = textureLoad(wtex, texel(k{J}{C}, c4_{V}, c4s), 0);
        //#end
        //#unroll I {R}
        {
            let s = vec4<f32>(subgroupBroadcast(a{I}[{C}], {J}u));
            //#unroll V {W}
            acc{I}_{V} = fma(s, w{J}{C}_{V}, acc{I}_{V});
            //#end
        }
        //#end
        //#end
        //#end
    }
    //#unroll V {W}
    let bias{V} = bias4(c4_{V}, p.in_c);
    //#end
    //#unroll I {R}
    //#unroll V {W}
    store_dx(b{I}, p.phase_y + p.stride * qy{I}, p.phase_x + p.stride * qx{I}, r0 + {I}u < m_total, col{V}, finish(acc{I}_{V}, bias{V}), {CV});
    //#end
    //#end
}
//#end

// The pixel 8 further on than `pos`, by steps of one (no division: a uniform loop of
// compares and selects, far cheaper on a SIMD CPU than a vector integer division).
fn advance8(pos: vec3<u32>) -> vec3<u32> {
    var q = pos;
    for (var s = 0u; s < 8u; s++) { q = next_pixel(q, vec2<u32>(p.out_h, p.out_w)); }
    return q;
}

// dy at output pixel m, channels 4 f4 .. +4 (zero past m_end or past F).
fn dy_row(m: u32, m_end: u32, f4: u32, vec4s: bool) -> vec4<f32> {
    let mc = min(m, m_end - 1u);
    var v = vec4<f32>(0.0);
    if vec4s {
        v = textureLoad(dytex, texel(mc, f4, p.out_c / 4u), 0);
    } else {
        for (var q = 0u; q < 4u; q++) {
            if 4u * f4 + q < p.out_c { v[q] = dy_at(mc * p.out_c + 4u * f4 + q); }
        }
    }
    return select(vec4<f32>(0.0), v, m < m_end);
}

// Store partial sums of kernel row k, channels 4 c4 .. +4, of batch slice `slice`.
fn store_part(slice: u32, k: u32, c4: u32, v: vec4<f32>, vec4s: bool) {
    let k_total = p.k_h * p.k_w * p.in_c;
    if k >= k_total || 4u * c4 >= p.out_c { return; }
    let row = slice * k_total + k;
    if vec4s {
        part4[row * (p.out_c / 4u) + c4] = v;
        return;
    }
    for (var q = 0u; q < 4u; q++) {
        let i = row * p.out_c + 4u * c4 + q;
        if 4u * c4 + q < p.out_c { part4[i / 4u][i % 4u] = v[q]; }
    }
}

// Bindings: p, xtex, dytex, part4. Grid: ceil(blocks * slices / 4) workgroups of 4
// subgroups, where the kernel's K x F (K = kh * kw * C) is cut into blocks of 4 RG rows
// x 32 W channels; subgroup s of workgroup gx takes unit 4 gx + s of the blocks x slices
// (block fastest, row block fastest within it: a 1-channel layer has one block, so its
// subgroups go to different slices), its lane l channels 4 (8 (W c + v) + l) .. +4 of
// column block c for v < W. Three forms as conv2d_forward_subgroup: W = 1, 2 (_wide),
// both of 32 rows (RG = 8; 16-row blocks made the _wide form slower here: each lane's
// x gathers then feed half as many multiply-adds), and _any, of 8 rows.
// One invocation: part[slice][k, f] = sum over the slice's output pixels m of
// im2col(x)[m, k] * dy[m, f] for its 4 RG kernel rows x 4 W channels. Per 8 pixels each
// lane loads RG vec4 of x (one pixel each, broadcast to the others) and 8 W of dy.
// conv2d_backward_kernel_reduce (conv2d.wgsl) adds the slices in order.
//#forms W:RG:WIDE:CV:FV 1:8::true:true 2:8:_wide:true:true 1:2:_any:c_vec4():f_vec4()
@compute @workgroup_size(32)
fn conv2d_backward_kernel_subgroup{WIDE}(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let k_total = p.k_h * p.k_w * p.in_c;
    let f4s = (p.out_c + 3u) / 4u;
    let row_blocks = (k_total + 4u * {RG}u - 1u) / (4u * {RG}u);
    let blocks = row_blocks * ((f4s + 8u * {W}u - 1u) / (8u * {W}u));
    // Past the last unit an invocation repeats the last one and stores nothing.
    let units = blocks * p.slices;
    let unit = min(wg.x * 4u + li / 8u, units - 1u);
    let stores = wg.x * 4u + li / 8u < units;
    let block = unit % blocks;
    let slice = unit / blocks;
    //#unroll V {W}
    let col{V} = (block / row_blocks * {W}u + {V}u) * 8u + li % 8u;
    let f4_{V} = min(col{V}, f4s - 1u);
    //#end
    let r0 = block % row_blocks * 4u * {RG}u;
    let plane = p.out_h * p.out_w;
    let m_begin = slice * p.slice_images * plane;
    let m_end = min((slice + 1u) * p.slice_images, p.batch) * plane;
    //#unroll G {RG}
    let rows{G} = kernel_rows(r0 / 4u + {G}u);
    //#unroll C 4
    //#unroll V {W}
    var acc{G}{C}_{V} = vec4<f32>(0.0);
    //#end
    //#end
    //#end
    var pos = coarse_pos(m_begin + lane);
    for (var m0 = m_begin; m0 < m_end; m0 += 8u) {
        let m = m0 + lane;
        let w = window(pos);
        pos = advance8(pos);
        // Row groups past K (a kernel of fewer than 32 rows) are skipped: the condition
        // is the same for the whole workgroup, so the branch is a real one.
        //#unroll G {RG}
        var a{G} = vec4<f32>(0.0);
        if 4u * {G}u < k_total { a{G} = gather_x(w, m < m_end, rows{G}, {CV}); }
        //#end
        //#unroll J 8
        //#unroll V {W}
        let d{J}_{V} = dy_row(m0 + {J}u, m_end, f4_{V}, {FV});
        //#end
        //#unroll G {RG}
        if 4u * {G}u < k_total {
            let s{J}{G} = subgroupBroadcast(a{G}, {J}u);
            //#unroll C 4
            //#unroll V {W}
            acc{G}{C}_{V} = fma(vec4<f32>(s{J}{G}[{C}]), d{J}_{V}, acc{G}{C}_{V});
            //#end
            //#end
        }
        //#end
        //#end
    }
    if stores {
        //#unroll G {RG}
        //#unroll C 4
        //#unroll V {W}
        store_part(slice, r0 + 4u * {G}u + {C}u, col{V}, acc{G}{C}_{V}, {FV});
        //#end
        //#end
        //#end
    }
}
//#end

// ---------------------------------------------------------------------------
// Narrow outputs (1 to 4 channels: a decoder's last layer). Spreading output
// channels over the lanes would leave 7 of 8 idle; here the lanes split the
// reduction's channels instead, a vec4 each, and subgroupAdd adds them up.

// The 4 texture rows k .. k + 4: row q holds the (at most 4) outputs' weights of one
// reduction channel, a texel of the packed kernel (pack_weights for the forward, rows
// tap * C + c; pack_weights_transposed for the input gradient, rows tap * F + f by phase).
fn narrow_weights(k: u32) -> mat4x4<f32> {
    return mat4x4<f32>(textureLoad(wtex, texel(k, 0u, 1u), 0), textureLoad(wtex, texel(k + 1u, 0u, 1u), 0),
                       textureLoad(wtex, texel(k + 2u, 0u, 1u), 0), textureLoad(wtex, texel(k + 3u, 0u, 1u), 0));
}

// The outputs from 4 reduction channels `v`, `wt` holding each output's 4 weights (the
// transposed texture rows): only the first `n` outputs are computed, one dot each.
fn narrow_dots(v: vec4<f32>, wt: mat4x4<f32>, n: u32) -> vec4<f32> {
    var o = vec4<f32>(dot(v, wt[0]), 0.0, 0.0, 0.0);
    if n > 1u {
        o = vec4<f32>(o.x, dot(v, wt[1]), dot(v, wt[2]), dot(v, wt[3]));
    }
    return o;
}

// Bindings: p, xtex (a copy of x), wtex (pack_weights), params, y4. Grid: ceil(B * OH * OW / 128)
// workgroups of 4 subgroups; subgroup s owns output pixels 32 (4 gx + s) .. +32.
// One subgroup: y = act(bias + im2col(x) kernel) for its 32 pixels and all out_c <= 4
// channels; lane l sums input channels 4 (l + 8 j) .. +4 of every tap, then subgroupAdd.
@compute @workgroup_size(32)
fn conv2d_forward_narrow(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let m_total = p.batch * p.out_h * p.out_w;
    let c4s = p.in_c / 4u;
    let r0 = (wg.x * 4u + li / 8u) * 32u;
    var pos = coarse_pos(min(r0, m_total - 1u));
    //#unroll I 32
    let w{I} = window(pos);
    pos = next_row(pos, r0 + {I}u, m_total, vec2<u32>(p.out_h, p.out_w));
    var acc{I} = vec4<f32>(0.0);
    //#end
    for (var c0 = 0u; c0 < c4s; c0 += 8u) {
        let c4 = min(c0 + lane, c4s - 1u);
        let live = c0 + lane < c4s;
        for (var t = 0u; t < p.k_h * p.k_w; t++) {
            let w = transpose(narrow_weights(t * p.in_c + 4u * c4));
            let ti = i32(t / p.k_w);
            let tj = i32(t % p.k_w);
            //#unroll I 32
            let y{I} = w{I}.y + ti;
            let x{I} = w{I}.z + tj;
            let ok{I} = live && y{I} >= 0 && y{I} < i32(p.in_h) && x{I} >= 0 && x{I} < i32(p.in_w);
            let v{I} = textureLoad(xtex, texel(select(0u, (u32(w{I}.x) + u32(y{I})) * p.in_w + u32(x{I}), ok{I}), c4, c4s), 0);
            acc{I} += select(vec4<f32>(0.0), narrow_dots(v{I}, w, p.out_c), ok{I});
            //#end
        }
    }
    let bias = bias4(0u, p.out_c);
    //#unroll I 32
    let s{I} = subgroupAdd(acc{I});
    if lane == {I}u % 8u { store_y(r0 + {I}u, m_total, 0u, p.out_c, finish(s{I}, bias), f_vec4()); }
    //#end
}

// Bindings: p, dytex (a copy of dy), wtex (pack_weights_transposed), params, dx4. Grid:
// ceil(B * rows of the phase * ceil(columns of the phase / 32) / 4) workgroups, one
// dispatch per phase of the stride (as conv2d_backward_input_subgroup).
// One subgroup: dx = act(bias + sum over the phase's taps and f of dy * kernel) for a
// strip of 32 consecutive pixels of one row of the phase and all in_c <= 4 channels;
// lane l sums output channels 4 (l + 8 j) .. +4, then subgroupAdd. (With bias and ReLU:
// a Conv2DTranspose's forward.) Pixel qx of the strip meets dy column e + qx - tj
// through tap column tj, so three neighbouring tap columns meet 34 columns: each lane
// loads them once for the three, not once per tap (a third of the loads of a 3x3 kernel).
@compute @workgroup_size(32)
fn conv2d_backward_input_narrow(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let ph = phase();
    let f4s = p.out_c / 4u;
    let w_rows = taps_before(ph.i0, ph.taps.x) * p.out_c;
    let taps = max(ph.taps.x * ph.taps.y, 1u);
    // This subgroup's strip: image b, phase row qy, phase columns qx0 .. qx0 + 32.
    let strips = (ph.n.y + 31u) / 32u;
    let units = p.batch * ph.n.x * strips;
    let stores = wg.x * 4u + li / 8u < units;
    let unit = min(wg.x * 4u + li / 8u, units - 1u);
    let b = unit / (ph.n.x * strips);
    let qy = (unit / strips) % ph.n.x;
    let qx0 = unit % strips * 32u;
    //#unroll I 32
    var acc{I} = vec4<f32>(0.0);
    //#end
    for (var f0 = 0u; f0 < f4s; f0 += 8u) {
        let f4 = min(f0 + lane, f4s - 1u);
        let live = f0 + lane < f4s;
        for (var ty = 0u; ty < ph.taps.x; ty++) {
            let oy = i32(ph.e.x + qy) - i32(ty);
            let row_ok = live && oy >= 0 && oy < i32(p.out_h);
            let row = (b * p.out_h + u32(max(oy, 0))) * p.out_w;
            for (var tx0 = 0u; tx0 < ph.taps.y; tx0 += 3u) {
                // dy columns ox0 .. ox0 + 34 of row oy; pixel I meets column ox0 + I + 2 - d
                // through tap column tx0 + d.
                let ox0 = i32(ph.e.y + qx0) - i32(tx0) - 2;
                //#unroll J 34
                let x{J} = ox0 + {J};
                let ok{J} = row_ok && x{J} >= 0 && x{J} < i32(p.out_w);
                let v{J} = select(vec4<f32>(0.0), textureLoad(dytex, texel(select(0u, row + u32(x{J}), ok{J}), f4, f4s), 0), ok{J});
                //#end
                //#unroll D 3
                // Tap (ty, tx0 + D) of the phase, zero past its last tap column.
                let t{D} = min(ty * ph.taps.y + tx0 + {D}u, taps - 1u);
                let w{D} = transpose(narrow_weights(w_rows + t{D} * p.out_c + 4u * f4)) * f32(tx0 + {D}u < ph.taps.y);
                //#end
                //#unroll I 32
                acc{I} += narrow_dots(v{I+2}, w0, p.in_c) + narrow_dots(v{I+1}, w1, p.in_c) + narrow_dots(v{I}, w2, p.in_c);
                //#end
            }
        }
    }
    let bias = bias4(0u, p.in_c);
    let iy = p.phase_y + p.stride * qy;
    //#unroll I 32
    let s{I} = subgroupAdd(acc{I});
    if lane == {I}u % 8u { store_dx(b, iy, p.phase_x + p.stride * (qx0 + {I}u), stores && qx0 + {I}u < ph.n.y, 0u, finish(s{I}, bias), c_vec4()); }
    //#end
}

// ---------------------------------------------------------------------------
// One fine-side channel (an image: a decoder's last layer, an encoder's first), a
// kernel of at most 3 x 3 (src/gpu/ops.rs: `thin`). The forward and the kernel
// gradient then have 9 reduction rows, where the kernels above fill 32; the input
// gradient's strips above add across lanes. Here the input gradient's lanes work
// alone on blocks of pixels, and the other two broadcast a window of 9 taps.

// The weights of kernel tap (ky, kx) for output channels 4 f4 .. +4 of the one input
// channel (kernel [kh, kw, 1, F]); zero past the kernel.
fn thin_tap(ky: u32, kx: u32, f4: u32) -> vec4<f32> {
    let at = p.w_off + (min(ky, p.k_h - 1u) * p.k_w + min(kx, p.k_w - 1u)) * p.out_c + 4u * f4;
    let w = vec4<f32>(params[at], params[at + 1u], params[at + 2u], params[at + 3u]);
    return select(vec4<f32>(0.0), w, ky < p.k_h && kx < p.k_w);
}

// The weights of phase tap (ty, tx): kernel tap (i0.x + stride ty, i0.y + stride tx),
// zero past the phase's taps.
fn thin_weight(ph: Phase, ty: u32, tx: u32, f4: u32) -> vec4<f32> {
    let w = thin_tap(ph.i0.x + p.stride * ty, ph.i0.y + p.stride * tx, f4);
    return select(vec4<f32>(0.0), w, ty < ph.taps.x && tx < ph.taps.y);
}

// Four neighbouring pixels of a row, from the six dy texels v0 .. v5 that the row's
// three tap columns reach: pixel j meets v(j + 2 - tx) through tap column tx (w_tx).
fn thin_row(v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>, v4: vec4<f32>, v5: vec4<f32>,
            w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(dot(v2, w0) + dot(v1, w1) + dot(v0, w2), dot(v3, w0) + dot(v2, w1) + dot(v1, w2),
                     dot(v4, w0) + dot(v3, w1) + dot(v2, w2), dot(v5, w0) + dot(v4, w1) + dot(v3, w2));
}

// Bindings: p, dytex (a copy of dy), params, dx4. Grid: one invocation per block of
// 4 x 4 pixels of the phase of one image; one dispatch per phase of the stride.
// One invocation: dx = act(bias + sum over the phase's taps and f of dy * kernel) for
// its 16 pixels. Per 4 channels of dy it loads the 6 x 6 texels its block's taps reach
// (once for all of them) and the 9 taps' weights: 36 loads for 576 multiply-adds.
@compute @workgroup_size(WG)
fn conv2d_backward_input_thin(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let ph = phase();
    let f4s = p.out_c / 4u;
    let blocks = (ph.n + 3u) / 4u;
    let idx = linear_id(wid, nwg, lid);
    if idx >= p.batch * blocks.x * blocks.y { return; }
    let b = idx / (blocks.x * blocks.y);
    let qy0 = (idx / blocks.y) % blocks.x * 4u;
    let qx0 = idx % blocks.y * 4u;
    // Coarse row R of the block's reach: oy = e.x + qy0 + R - 2; pixel row I meets
    // R = I + 2 - ty through tap row ty (columns likewise).
    //#unroll R 6
    let oy{R} = i32(ph.e.x + qy0 + {R}u) - 2;
    let ox{R} = i32(ph.e.y + qx0 + {R}u) - 2;
    let row_ok{R} = oy{R} >= 0 && oy{R} < i32(p.out_h);
    let col_ok{R} = ox{R} >= 0 && ox{R} < i32(p.out_w);
    let row{R} = (b * p.out_h + u32(max(oy{R}, 0))) * p.out_w;
    //#end
    //#unroll I 4
    var acc{I} = vec4<f32>(0.0);
    //#end
    for (var f4 = 0u; f4 < f4s; f4++) {
        //#unroll T 3
        let w{T}0 = thin_weight(ph, {T}u, 0u, f4);
        let w{T}1 = thin_weight(ph, {T}u, 1u, f4);
        let w{T}2 = thin_weight(ph, {T}u, 2u, f4);
        //#end
        //#unroll R 6
        //#unroll S 6
        let ok{R}{S} = row_ok{R} && col_ok{S};
        let v{R}_{S} = select(vec4<f32>(0.0), textureLoad(dytex, texel(select(0u, row{R} + u32(max(ox{S}, 0)), ok{R}{S}), f4, f4s), 0), ok{R}{S});
        //#end
        //#end
        //#unroll I 4
        acc{I} += thin_row(v{I+2}_0, v{I+2}_1, v{I+2}_2, v{I+2}_3, v{I+2}_4, v{I+2}_5, w00, w01, w02)
                + thin_row(v{I+1}_0, v{I+1}_1, v{I+1}_2, v{I+1}_3, v{I+1}_4, v{I+1}_5, w10, w11, w12)
                + thin_row(v{I}_0, v{I}_1, v{I}_2, v{I}_3, v{I}_4, v{I}_5, w20, w21, w22);
        //#end
    }
    let bias = bias4(0u, 1u);
    //#unroll I 4
    let out{I} = finish(acc{I}, bias);
    //#unroll J 4
    if qy0 + {I}u < ph.n.x && qx0 + {J}u < ph.n.y {
        let m = (b * p.in_h + p.phase_y + p.stride * (qy0 + {I}u)) * p.in_w + p.phase_x + p.stride * (qx0 + {J}u);
        dx4[m / 4u][m % 4u] = out{I}[{J}];
    }
    //#end
    //#end
}

// x (one channel) at tap (ky, kx) of the window `w`
// (see `window`), zero outside the image or the kernel.
fn thin_x(w: vec3<i32>, ky: u32, kx: u32) -> f32 {
    let iy = w.y + i32(ky);
    let ix = w.z + i32(kx);
    let ok = ky < p.k_h && kx < p.k_w && iy >= 0 && iy < i32(p.in_h) && ix >= 0 && ix < i32(p.in_w);
    return select(0.0, x_at(select(0u, (u32(w.x) + u32(iy)) * p.in_w + u32(ix), ok)), ok);
}

// Bindings: p, xtex (a copy of x), params, y4. Grid: (ceil(F / 32), ceil(B * OH * OW
// / 128)) workgroups of 4 subgroups; subgroup s of workgroup (gx, gy) owns output
// pixels 32 (4 gy + s) .. +32, its lane l channels 4 (8 gx + l) .. +4. Needs C == 1,
// F % 4 == 0 and a kernel of at most 3 x 3 (src/gpu/ops.rs: `thin`).
// One invocation: y = act(bias + im2col(x) kernel) for its 32 pixels x 4 channels; its
// taps' weights stay in registers. Per 8 pixels each lane loads the window of one
// (a texel per tap), and subgroupBroadcast hands it to the others.
@compute @workgroup_size(32)
fn conv2d_forward_thin(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let f4s = p.out_c / 4u;
    let col = wg.x * 8u + lane;
    let f4 = min(col, f4s - 1u);
    let m_total = p.batch * p.out_h * p.out_w;
    //#unroll KY 3
    //#unroll KX 3
    let w{KY}{KX} = thin_tap({KY}u, {KX}u, f4);
    //#end
    //#end
    let bias = bias4(f4, p.out_c);
    let m0 = (wg.y * 4u + li / 8u) * 32u;
    var pos = coarse_pos(min(m0 + lane, m_total - 1u));
    for (var j0 = 0u; j0 < 32u; j0 += 8u) {
        let w = window(pos);
        pos = advance8(pos);
        //#unroll KY 3
        //#unroll KX 3
        let x{KY}{KX} = thin_x(w, {KY}u, {KX}u);
        //#end
        //#end
        //#unroll J 8
        {
            var acc = vec4<f32>(0.0);
            //#unroll KY 3
            //#unroll KX 3
            acc = fma(vec4<f32>(subgroupBroadcast(x{KY}{KX}, {J}u)), w{KY}{KX}, acc);
            //#end
            //#end
            let m = m0 + j0 + {J}u;
            if m < m_total && col < f4s { y4[m * f4s + f4] = finish(acc, bias); }
        }
        //#end
    }
}

// Bindings: p, xtex (a copy of x), dytex (a copy of dy), part4. Grid: (ceil(F / 32),
// ceil(slices / 4)) workgroups of 4 subgroups; subgroup s of workgroup (gx, gy) takes
// slice 4 gy + s, its lane l channels 4 (8 gx + l) .. +4.
// One invocation: part[slice][tap, f] = sum over the slice's output pixels m of
// x(window(m) + tap) * dy[m, f] for every tap and its 4 channels. Per 8 pixels each
// lane loads the window of one (subgroupBroadcast hands it to the others) and its
// channels of dy at all 8. conv2d_backward_kernel_reduce (conv2d.wgsl) adds the slices.
@compute @workgroup_size(32)
fn conv2d_backward_kernel_thin(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32) {
    let f4s = p.out_c / 4u;
    let col = wg.x * 8u + lane;
    let f4 = min(col, f4s - 1u);
    let stores = wg.y * 4u + li / 8u < p.slices;
    let slice = min(wg.y * 4u + li / 8u, p.slices - 1u);
    let plane = p.out_h * p.out_w;
    let m_begin = slice * p.slice_images * plane;
    let m_end = min((slice + 1u) * p.slice_images, p.batch) * plane;
    //#unroll KY 3
    //#unroll KX 3
    var acc{KY}{KX} = vec4<f32>(0.0);
    //#end
    //#end
    var pos = coarse_pos(m_begin + lane);
    for (var m0 = m_begin; m0 < m_end; m0 += 8u) {
        let w = window(pos);
        pos = advance8(pos);
        let live = m0 + lane < m_end;
        //#unroll KY 3
        //#unroll KX 3
        let x{KY}{KX} = select(0.0, thin_x(w, {KY}u, {KX}u), live);
        //#end
        //#end
        //#unroll J 8
        {
            let d = dy_row(m0 + {J}u, m_end, f4, true);
            //#unroll KY 3
            //#unroll KX 3
            acc{KY}{KX} = fma(vec4<f32>(subgroupBroadcast(x{KY}{KX}, {J}u)), d, acc{KY}{KX});
            //#end
            //#end
        }
        //#end
    }
    if stores && col < f4s {
        //#unroll KY 3
        //#unroll KX 3
        if {KY}u < p.k_h && {KX}u < p.k_w { store_part(slice, {KY}u * p.k_w + {KX}u, col, acc{KY}{KX}, true); }
        //#end
        //#end
    }
}
