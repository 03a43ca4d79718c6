// Gather a batch from the data set held on the GPU as bytes packed four to a u32
// (the training set as f32 would pass the 128 MiB storage-binding limit), and
// preprocess it as the reference program does. Twin of src/cpu/gather.rs.

struct Gather {
    batch: u32, pixels: u32, binarize: u32, _p0: u32,
}

@group(0) @binding(0) var<uniform> p: Gather;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<uniform> step: Step;

// Bindings: p, images, order, x, step. Grid: one invocation per pixel of the batch.
// One invocation: x[b, i] = preprocess(pixel i of image order[step.batch_start + b]).
@compute @workgroup_size(WG)
fn gather_images(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = linear_id(wid, nwg, lid);
    if idx >= p.batch * p.pixels { return; }
    let b = idx / p.pixels;
    let i = idx % p.pixels;
    let byte_index = order[step.batch_start + b] * p.pixels + i;
    let byte = (images[byte_index / 4u] >> (8u * (byte_index % 4u))) & 255u;
    let v = f32(byte) / 255.0;
    x[idx] = select(v, select(0.0, 1.0, v > 0.5), p.binarize != 0u);
}
