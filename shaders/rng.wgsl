// The counter-based RNG: twin of src/rng.rs, prepended to the shaders that draw noise.
// Every number is a pure function of (key, step, index) through the pcg4d hash
// (Jarzynski & Olano, JCGT 2020): wrapping u32 arithmetic only, so it matches the
// CPU bit for bit. Normals by Box-Muller, from arithmetic only.

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

// u1 in (0, 1] so the log is finite. The log, square root and cosine are ours, made of
// +, -, *, /, floor and bit operations, whose precision every backend specifies: the
// built-ins' accuracy is the driver's, and with them each adapter drew its own noise.
// Same operations in the same order as src/rng.rs.
fn box_muller(a: u32, b: u32) -> f32 {
    let u1 = f32((a >> 8u) + 1u) * (1.0 / 16777216.0);
    let u2 = u32_to_unit(b);
    return sqrt_newton(-2.0 * ln_unit(u1)) * cos_turns(u2);
}

// ln x for x in [2^-24, 1]: x = m 2^e, m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(s),
// s = (m - 1) / (m + 1), as an odd series through s^11.
fn ln_unit(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    var e = i32(bits >> 23u) - 127;
    var m = bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);
    if m > 1.4142135f {
        m = m * 0.5f;
        e = e + 1;
    }
    let s = (m - 1.0f) / (m + 1.0f);
    let w = s * s;
    let series = ((((0.18181819f * w + 0.22222222f) * w + 0.2857143f) * w + 0.4f) * w + 0.6666667f) * w + 2.0f;
    // ln 2 in two parts: the first has 14 significant bits, so e times it is exact.
    let ef = f32(e);
    return ef * 0.69314575f + (ef * 1.4286068e-6f + s * series);
}

// sqrt(x) for x >= 0 as x / sqrt(x): the bit estimate of 1/sqrt(x), three Newton steps.
fn sqrt_newton(x: f32) -> f32 {
    if x <= 0.0f {
        return 0.0f;
    }
    let h = 0.5f * x;
    var y = bitcast<f32>(0x5f375a86u - (bitcast<u32>(x) >> 1u));
    for (var i = 0; i < 3; i++) {
        y = y * (1.5f - h * y * y);
    }
    return x * y;
}

// cos(2 pi u) for u in [0, 1): an exact split into a quarter turn q and a rest f in
// [-1/2, 1/2] quarter turns, then cos or sin of (pi/2) f by Taylor polynomials in f.
fn cos_turns(u: f32) -> f32 {
    let t = u * 4.0f;
    var q = floor(t);
    var f = t - q;
    if f > 0.5f {
        f = f - 1.0f;
        q = q + 1.0f;
    }
    let w = f * f;
    let c = ((((-2.5202042e-5f * w + 0.00091926026f) * w - 0.02086348f) * w + 0.2536695f) * w - 1.2337005f) * w + 1.0f;
    let s = ((((0.00016044118f * w - 0.004681754f) * w + 0.079692625f) * w - 0.6459641f) * w + 1.5707964f) * f;
    // cos(q pi/2 + x) is cos x, -sin x, -cos x, sin x for q = 0, 1, 2, 3 (mod 4).
    switch u32(q) % 4u {
        case 0u: { return c; }
        case 1u: { return -s; }
        case 2u: { return -c; }
        default: { return s; }
    }
}

fn rng_bits(key: vec2<u32>, step: u32, index: u32) -> vec4<u32> {
    return pcg4d(vec4<u32>(key.x, key.y, step, index));
}

fn rng_normal(key: vec2<u32>, step: u32, index: u32) -> f32 {
    let v = rng_bits(key, step, index);
    return box_muller(v.x, v.y);
}
