// The counter-based RNG: twin of src/rng.rs, prepended to the shaders that draw noise.
// Every number is a pure function of (key, step, index) through the pcg4d hash
// (Jarzynski & Olano, JCGT 2020): wrapping u32 arithmetic only, so it matches the
// CPU bit for bit. Normals by Box-Muller.

fn pcg4d(v_in: vec4<u32>) -> vec4<u32> {
    var v = v_in * 1664525u + 1013904223u;
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    v = v ^ (v >> vec4<u32>(16u));
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    return v;
}

// Uniform in [0, 1) from the top 24 bits.
fn u32_to_unit(x: u32) -> f32 {
    return f32(x >> 8u) * (1.0 / 16777216.0);
}

// u1 in (0, 1] so the log is finite.
fn box_muller(a: u32, b: u32) -> f32 {
    let u1 = f32((a >> 8u) + 1u) * (1.0 / 16777216.0);
    let u2 = u32_to_unit(b);
    let r = sqrt(-2.0 * log(u1));
    return r * cos(6.2831855 * u2);
}

fn rng_bits(key: vec2<u32>, step: u32, index: u32) -> vec4<u32> {
    return pcg4d(vec4<u32>(key.x, key.y, step, index));
}

fn rng_normal(key: vec2<u32>, step: u32, index: u32) -> f32 {
    let v = rng_bits(key, step, index);
    return box_muller(v.x, v.y);
}
