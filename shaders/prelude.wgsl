// Prepended to every shader file (with rng.wgsl) by src/gpu/kernels.rs, after the
// line `const WG: u32 = ...;` that carries the workgroup size from src/gpu/kernels.rs.
// What more than one file needs lives here, once.

// Per-step values, written by the host before each step's submission
// (src/gpu/uniforms.rs: StepUniform).
struct Step {
    // The noise counter: training steps done so far, or the evaluation pass's index.
    step: u32,
    // Where this batch starts in the epoch's order (or in the test set).
    batch_start: u32,
    // Where loss_reduce writes this batch's loss.
    loss_slot: u32,
    // Adam's bias-corrected step size, computed on the host in f64.
    alpha: f32,
}

// The geometry of one convolution (src/gpu/uniforms.rs: ConvUniform; src/model.rs: ConvGeom).
// Conv2D: `in` is its input, `out` its output. Conv2DTranspose: its own input and
// output, with the padding of the Conv2D that maps its output back to its input.
struct Conv {
    batch: u32, in_h: u32, in_w: u32, in_c: u32,
    out_h: u32, out_w: u32, out_c: u32, k_h: u32,
    k_w: u32, stride: u32, pad_top: u32, pad_left: u32,
    w_off: u32, b_off: u32, relu: u32,
    // Blocked kernels: add the bias (1) or not (0).
    bias: u32,
    // Split kernel gradients: images per slice of the batch, and the slice count.
    slice_images: u32, slices: u32,
    // Input-gradient kernels by phase (subgroup.wgsl, tiled.wgsl): the residues mod
    // stride of the fine-side rows and columns this dispatch computes.
    phase_y: u32, phase_x: u32, _p0: u32, _p1: u32, _p2: u32, _p3: u32,
}

// The invocation's index in a 1-D grid of WG-wide workgroups. Grids are 2-D when
// one dimension would pass the 65535-workgroup limit.
fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// The two directions of a strided convolution's index map. The coarse side has one
// position per stride step (a Conv2D's output, a Conv2DTranspose's input); the fine
// side is the other. Coarse position q meets fine position q * stride + k - pad
// through kernel tap k.

// The fine position that coarse position q meets through tap k, or -1 outside [0, len).
fn fine_from_coarse(q: u32, k: u32, stride: u32, pad: u32, len: u32) -> i32 {
    let f = i32(q * stride + k) - i32(pad);
    return select(-1, f, f >= 0 && f < i32(len));
}

// The coarse position whose tap k lands on fine position f, or -1 (between two
// coarse positions, or outside [0, len)).
fn coarse_from_fine(f: u32, k: u32, stride: u32, pad: u32, len: u32) -> i32 {
    let t = i32(f + pad) - i32(k);
    if t < 0 || t % i32(stride) != 0 { return -1; }
    let q = t / i32(stride);
    return select(-1, q, q < i32(len));
}

// Workgroup scratch for tree_sum.
var<workgroup> partial: array<f32, WG>;

// Sum partial[0..WG] into partial[0] in a fixed tree (same inputs, same bits: no
// atomics). Every invocation of the workgroup must call it.
fn tree_sum(t: u32) {
    for (var width = WG / 2u; width > 0u; width = width / 2u) {
        workgroupBarrier();
        if t < width { partial[t] += partial[t + width]; }
    }
    workgroupBarrier();
}
