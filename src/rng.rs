//! The counter-based RNG shared by the CPU reference and the shaders.
//!
//! Every random number is a pure function of (seed, stream, step, index), so the
//! GPU can draw element `i` of a batch's noise without any state, and the CPU
//! reference draws exactly the same numbers. `shaders/rng.wgsl` is the twin of
//! this file: change one, change both (the parity tests compare them).
//!
//! The bits come from `pcg4d` (Jarzynski & Olano, "Hash Functions for GPU
//! Rendering", JCGT 2020): a 4 x u32 -> 4 x u32 hash made of wrapping multiplies,
//! adds, xors and shifts only, so WGSL and Rust agree bit for bit.
//!
//! Input words: (seed low, seed high ^ stream tag, step, index).

/// What a random number is for; each purpose has its own stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stream {
    /// Weight initialisation; `step` is unused (0).
    Init = 1,
    /// The reparameterisation noise of training step `step`.
    Noise = 2,
    /// The epoch's shuffle; `step` is the epoch.
    Shuffle = 3,
    /// The fixed latent vectors of the sample grids.
    Samples = 4,
    /// The noise of evaluation pass `step` (the epoch).
    EvalNoise = 5,
    /// The noise of `cvae eval`: `step` is the sample k, the index is the image's place
    /// in the test set times the latent size plus the latent dimension, so every
    /// (image, sample) pair draws its own, whatever the chunk or batch size.
    Importance = 6,
}

/// The tag is placed in the high bits of the second word.
pub const STREAM_SHIFT: u32 = 24;

pub fn pcg4d(mut v: [u32; 4]) -> [u32; 4] {
    for x in v.iter_mut() {
        *x = x.wrapping_mul(1664525).wrapping_add(1013904223);
    }
    mix(&mut v);
    for x in v.iter_mut() {
        *x ^= *x >> 16;
    }
    mix(&mut v);
    v
}

fn mix(v: &mut [u32; 4]) {
    v[0] = v[0].wrapping_add(v[1].wrapping_mul(v[3]));
    v[1] = v[1].wrapping_add(v[2].wrapping_mul(v[0]));
    v[2] = v[2].wrapping_add(v[0].wrapping_mul(v[1]));
    v[3] = v[3].wrapping_add(v[1].wrapping_mul(v[2]));
}

/// A uniform in [0, 1) from the top 24 bits, exact in f32.
pub fn u32_to_unit(x: u32) -> f32 {
    (x >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Box-Muller on two hash words; u1 is in (0, 1] so the log is finite.
///
/// The log, the square root and the cosine are our own, made of `+`, `-`, `*`, `/`,
/// `floor` and bit operations only: WGSL leaves `log`, `sqrt` and `cos` to the
/// driver's accuracy (Vulkan allows `cos` an absolute error of 2^-11), so the built-ins
/// gave every adapter its own noise. Every backend rounds `+`, `-` and `*` correctly and
/// `/` to 2.5 ULP, so these agree with `rng.wgsl` to a few ULP on any adapter (bit for
/// bit where the driver fuses no multiply-add). Written in the same order as there.
pub fn box_muller(a: u32, b: u32) -> f32 {
    let u1 = ((a >> 8) + 1) as f32 * (1.0 / 16_777_216.0);
    let u2 = u32_to_unit(b);
    sqrt_newton(-2.0 * ln_unit(u1)) * cos_turns(u2)
}

/// ln x for x in [2^-24, 1]: x = m 2^e with m in [sqrt(1/2), sqrt(2)), taken apart
/// exactly from the bits; ln m = 2 atanh(s) with s = (m - 1) / (m + 1), |s| <= 0.172,
/// as an odd series in s through s^11 (the next term is below 2^-27 of ln m).
pub fn ln_unit(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = (bits >> 23) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    if m > std::f32::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let w = s * s;
    let series = ((((0.18181819 * w + 0.22222222) * w + 0.2857143) * w + 0.4) * w + 0.6666667) * w + 2.0;
    // ln 2 in two parts: the first has 14 significant bits, so e times it is exact.
    let ef = e as f32;
    ef * 0.69314575 + (ef * 1.4286068e-6 + s * series)
}

/// sqrt(x) for x >= 0 as x / sqrt(x): the reciprocal square root from the classic bit
/// estimate (error under 0.2 %) and three Newton steps (each squares the error).
pub fn sqrt_newton(x: f32) -> f32 {
    if x <= 0.0 {
        return 0.0;
    }
    let h = 0.5 * x;
    let mut y = f32::from_bits(0x5f37_5a86 - (x.to_bits() >> 1));
    for _ in 0..3 {
        y *= 1.5 - h * y * y;
    }
    x * y
}

/// cos(2 pi u) for u in [0, 1): the turn split exactly into a quarter q and a rest f in
/// [-1/2, 1/2] quarter turns, then cos or sin of (pi/2) f by Taylor polynomials in f
/// (through f^10 and f^9: the next terms are below 2^-25).
pub fn cos_turns(u: f32) -> f32 {
    let t = u * 4.0;
    let mut q = t.floor();
    let mut f = t - q;
    if f > 0.5 {
        f -= 1.0;
        q += 1.0;
    }
    let w = f * f;
    let c = ((((-2.5202042e-5 * w + 0.00091926026) * w - 0.02086348) * w + 0.2536695) * w - 1.2337005) * w + 1.0;
    let s = ((((0.00016044118 * w - 0.004681754) * w + 0.079692625) * w - 0.6459641) * w + 1.5707964) * f;
    // cos(q pi/2 + x) is cos x, -sin x, -cos x, sin x for q = 0, 1, 2, 3 (mod 4).
    match q as u32 % 4 {
        0 => c,
        1 => -s,
        2 => -c,
        _ => s,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rng {
    pub seed: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { seed }
    }

    /// The two key words the shaders receive.
    pub fn key(&self, stream: Stream) -> [u32; 2] {
        [self.seed as u32, ((self.seed >> 32) as u32) ^ ((stream as u32) << STREAM_SHIFT)]
    }

    pub fn bits(&self, stream: Stream, step: u32, index: u32) -> [u32; 4] {
        let [k0, k1] = self.key(stream);
        pcg4d([k0, k1, step, index])
    }

    pub fn uniform(&self, stream: Stream, step: u32, index: u32) -> f32 {
        u32_to_unit(self.bits(stream, step, index)[0])
    }

    pub fn normal(&self, stream: Stream, step: u32, index: u32) -> f32 {
        let v = self.bits(stream, step, index);
        box_muller(v[0], v[1])
    }

    /// `n` standard normals of one step, element `i` at index `i`.
    pub fn normals(&self, stream: Stream, step: u32, n: usize) -> Vec<f32> {
        (0..n).map(|i| self.normal(stream, step, i as u32)).collect()
    }

    /// The noise [n, latent] of images `first .. first + n` at `step`, indexed by each
    /// image's place: element (b, l) at index (first + b) * latent + l.
    pub fn image_normals(&self, stream: Stream, step: u32, first: usize, n: usize, latent: usize) -> Vec<f32> {
        (0..n * latent).map(|i| self.normal(stream, step, ((first + i / latent) * latent + i % latent) as u32)).collect()
    }

    /// A uniformly random permutation of 0..n (Fisher-Yates), fixed by (seed, epoch).
    pub fn permutation(&self, epoch: u32, n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            let [a, b, _, _] = self.bits(Stream::Shuffle, epoch, i as u32);
            // 64 random bits modulo (i + 1): bias below 2^-32 for our sizes.
            let r = ((u64::from(a) << 32) | u64::from(b)) % (i as u64 + 1);
            p.swap(i, r as usize);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_have_unit_moments() {
        let z = Rng::new(7).normals(Stream::Noise, 3, 200_000);
        let n = z.len() as f64;
        let mean = z.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = z.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        // Standard errors: 1/sqrt(n) = 0.0022 for the mean, sqrt(2/n) = 0.0032 for the variance.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
    }

    /// The arithmetic-only log, square root and cosine against f64's, over their whole
    /// input ranges: ln within 4 ULP of |ln x| + 1e-9 (near x = 1 it is a difference of
    /// nearly equal numbers), sqrt within 2 ULP, cos within 4e-7 absolute.
    #[test]
    fn box_muller_parts_match_f64() {
        let ulp = |x: f64| (x.abs() * f64::from(f32::EPSILON)).max(f64::MIN_POSITIVE);
        let (mut worst_ln, mut worst_sqrt, mut worst_cos) = (0.0f64, 0.0f64, 0.0f64);
        for k in (0u32..(1 << 24)).step_by(97).chain([0, 1, (1 << 24) - 1]) {
            let x = (k + 1) as f32 / 16_777_216.0;
            let ln = ln_unit(x) as f64;
            let want = (x as f64).ln();
            worst_ln = worst_ln.max((ln - want).abs() / (ulp(want) + 1e-9));
            let r2 = -2.0 * ln_unit(x);
            worst_sqrt = worst_sqrt.max((sqrt_newton(r2) as f64 - (r2 as f64).sqrt()).abs() / ulp((r2 as f64).sqrt()));
            let u = k as f32 / 16_777_216.0;
            worst_cos = worst_cos.max((cos_turns(u) as f64 - (std::f64::consts::TAU * u as f64).cos()).abs());
        }
        assert!(worst_ln <= 4.0, "ln_unit: {worst_ln} ULP");
        assert!(worst_sqrt <= 2.0, "sqrt_newton: {worst_sqrt} ULP");
        assert!(worst_cos <= 4e-7, "cos_turns: {worst_cos:e}");
        assert_eq!(sqrt_newton(0.0), 0.0);
        assert_eq!(box_muller(u32::MAX, 0), 0.0, "u1 = 1 gives r = 0");
    }

    #[test]
    fn uniforms_are_in_range_and_streams_differ() {
        let r = Rng::new(1);
        let a: Vec<f32> = (0..1000).map(|i| r.uniform(Stream::Init, 0, i)).collect();
        assert!(a.iter().all(|&u| (0.0..1.0).contains(&u)));
        let b: Vec<f32> = (0..1000).map(|i| r.uniform(Stream::Noise, 0, i)).collect();
        assert_ne!(a, b);
        let mean = a.iter().sum::<f32>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.03, "mean {mean}");
    }

    #[test]
    fn permutation_is_a_permutation() {
        let p = Rng::new(3).permutation(0, 1000);
        let mut s = p.clone();
        s.sort();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_ne!(p, Rng::new(3).permutation(1, 1000));
    }
}
