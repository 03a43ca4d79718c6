//! Helpers shared by the test files: deterministic random data, error reports, scratch
//! folders and the cvae binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cvae::model::{ConvGeom, Padding};
use cvae::rng::{Rng, Stream};

/// Small conv shapes: batch 1 and odd sizes, both paddings, both strides, a 2x2
/// kernel. As a Conv2D, or a Conv2DTranspose with the same fields.
pub fn small_conv_cases(transpose: bool) -> Vec<ConvGeom> {
    conv_cases_from(
        transpose,
        &[
            (1, 5, 5, 1, 2, 3, 1, Padding::Same),
            (2, 7, 6, 3, 4, 3, 2, Padding::Same),
            (1, 7, 7, 2, 3, 3, 2, Padding::Valid),
            (3, 6, 5, 2, 2, 3, 1, Padding::Valid),
            (2, 4, 4, 3, 2, 2, 2, Padding::Same),
        ],
    )
}

/// (batch, h, w, in channels, filters, kernel, stride, padding).
pub type ConvCase = (usize, usize, usize, usize, usize, usize, usize, Padding);

/// Conv cases as geometries.
pub fn conv_cases_from(transpose: bool, cases: &[ConvCase]) -> Vec<ConvGeom> {
    cases
        .iter()
        .map(|&(batch, h, w, c, f, k, s, pad)| {
            if transpose {
                ConvGeom::conv2d_transpose(batch, (h, w, c), f, k, s, pad)
            } else {
                ConvGeom::conv2d(batch, (h, w, c), f, k, s, pad)
            }
        })
        .collect()
}

/// Deterministic values in [-scale, scale), different for each `tag`.
pub fn rand_vec(n: usize, tag: u32, scale: f32) -> Vec<f32> {
    let r = Rng::new(0x5eed_0000 + tag as u64);
    (0..n).map(|i| (2.0 * r.uniform(Stream::Init, tag, i as u32) - 1.0) * scale).collect()
}

/// Largest absolute and relative differences and where the worst one is.
pub struct Diff {
    pub max_abs: f64,
    pub max_rel: f64,
    pub worst: usize,
    pub worst_got: f64,
    pub worst_want: f64,
}

/// Compare element by element with `|got - want| <= atol + rtol * |want|`;
/// returns the statistics and whether all passed.
pub fn compare(got: &[f32], want: &[f32], atol: f64, rtol: f64) -> (Diff, bool) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    let mut d = Diff { max_abs: 0.0, max_rel: 0.0, worst: 0, worst_got: 0.0, worst_want: 0.0 };
    let mut ok = true;
    let mut worst_excess = f64::NEG_INFINITY;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g as f64, w as f64);
        let abs = (g - w).abs();
        let rel = abs / w.abs().max(1e-30);
        if !g.is_finite() {
            ok = false;
        }
        d.max_abs = d.max_abs.max(abs);
        if w.abs() > atol {
            d.max_rel = d.max_rel.max(rel);
        }
        let excess = abs - (atol + rtol * w.abs());
        if excess > worst_excess || !g.is_finite() {
            worst_excess = excess;
            d.worst = i;
            d.worst_got = g;
            d.worst_want = w;
        }
        if excess > 0.0 {
            ok = false;
        }
    }
    (d, ok)
}

/// Assert closeness, printing max abs/rel error and the worst element on failure.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f64, rtol: f64) -> Diff {
    let (d, ok) = compare(got, want, atol, rtol);
    assert!(
        ok,
        "{what}: max abs error {:.3e}, max rel error {:.3e}; worst at index {}: got {} want {} (atol {atol:e}, rtol {rtol:e})",
        d.max_abs, d.max_rel, d.worst, d.worst_got, d.worst_want
    );
    d
}

/// Central differences of `f` at `x` for every element (or every `stride`-th one).
pub fn numeric_grad(f: &dyn Fn(&[f32]) -> f64, x: &[f32], h: f32, stride: usize) -> Vec<(usize, f32)> {
    let mut xs = x.to_vec();
    (0..x.len())
        .step_by(stride.max(1))
        .map(|i| {
            let orig = xs[i];
            xs[i] = orig + h;
            let up = f(&xs);
            xs[i] = orig - h;
            let down = f(&xs);
            xs[i] = orig;
            // The step actually taken, after f32 rounding of x +- h.
            let step = ((orig + h) as f64) - ((orig - h) as f64);
            (i, ((up - down) / step) as f32)
        })
        .collect()
}

/// Check an analytic gradient against central differences.
pub fn gradcheck(what: &str, f: &dyn Fn(&[f32]) -> f64, x: &[f32], analytic: &[f32], h: f32, stride: usize, atol: f64, rtol: f64) {
    let num = numeric_grad(f, x, h, stride);
    let got: Vec<f32> = num.iter().map(|&(i, _)| analytic[i]).collect();
    let want: Vec<f32> = num.iter().map(|&(_, g)| g).collect();
    assert_close(&format!("{what} (analytic vs central differences)"), &got, &want, atol, rtol);
}

/// f64 dot product, the scalar objective of the linear-op checks.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// f32's unit roundoff.
pub const U: f64 = 1.0 / 16_777_216.0;

/// Assert |got - want| <= bound[i] for every element; on failure report the max
/// absolute and relative errors and the worst element. Returns (max abs, max rel).
pub fn assert_within(what: &str, got: &[f32], want: &[f32], bound: &[f64]) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let (mut max_abs, mut max_rel, mut worst, mut worst_ratio) = (0.0f64, 0.0f64, 0usize, 0.0f64);
    for i in 0..got.len() {
        let (g, w) = (got[i] as f64, want[i] as f64);
        let abs = if g.is_finite() { (g - w).abs() } else { f64::INFINITY };
        max_abs = max_abs.max(abs);
        if w != 0.0 {
            max_rel = max_rel.max(abs / w.abs());
        }
        let ratio = abs / bound[i].max(1e-38);
        if ratio > worst_ratio {
            worst_ratio = ratio;
            worst = i;
        }
    }
    assert!(
        worst_ratio <= 1.0,
        "{what}: max abs error {max_abs:.3e}, max rel error {max_rel:.3e}; worst at index {worst}: got {} want {} (bound {:.3e}, {} elements)",
        got[worst],
        want[worst],
        bound[worst],
        got.len()
    );
    (max_abs, max_rel)
}

/// Bound for a sum of `k` products whose absolute values add up to `mag`:
/// two different f32 summation orders (CPU and GPU, with or without FMA) each
/// err by about sqrt(k) * u * mag (random-walk rounding; the worst case is k * u * mag).
/// A factor 8 covers the spread of that estimate.
pub fn dot_bound(k: usize, mag: &[f32]) -> Vec<f64> {
    mag.iter().map(|&m| 8.0 * (k as f64).sqrt() * U * m as f64 + 1e-37).collect()
}

/// How far a standard normal from `cvae::rng::box_muller` may differ between two
/// adapters (or an adapter and the CPU), in f32's unit roundoff u. Every step is
/// +, -, *, / or exact bit work; a driver may fuse a multiply-add (SPIR-V allows it)
/// and may round `/` to 2.5 ULP where the CPU rounds to 0.5:
/// - cos_turns: the split of the turn is exact; five Horner steps, each fused or not,
///   differ by at most 8u in all (values at most 1.6, multiplied by f^2 <= 1/4 after);
/// - ln_unit: s = (m - 1) / (m + 1) by up to 3 ULP (6u), the series and the last sums
///   by 8u more, relative to L = ln u1 (|ln m| <= |L| whenever e != 0): 14u |L|;
/// - sqrt_newton: half of that relative error, plus the last Newton step's rounding
///   (6u): 13u r;
/// - z = r cos: |dz| <= 13u |z| + 8u r + u |z| with r <= sqrt(2 ln 2^24) = 5.77.
pub fn normal_bound(z: f32) -> f64 {
    16.0 * U * z.abs() as f64 + 48.0 * U
}

pub fn abs_vec(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

/// A path under the tests' scratch folder with nothing there, one per driver (`on` runs
/// a test on each at once).
pub fn tmp_path(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(driver().name()).join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// An empty folder under the tests' scratch folder.
pub fn tmp_dir(name: &str) -> PathBuf {
    let d = tmp_path(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The cvae binary as a command: measured kernel choices go to the tests' own cache, not
/// the user's, and the validation layer writes to a log of its own, which `validated`
/// guards (and `cvae`) check.
pub fn cvae_command() -> Command {
    vulkan();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel_cache");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cvae"));
    // The environment `vulkan` set (drivers, layer) is inherited, but for the log.
    cmd.env("CVAE_CACHE_DIR", cache).env(LOG_VAR, new_log("cvae"));
    cmd
}

/// Run the cvae binary (`cvae_command`) to the end; fails on any validation message.
/// The layer's own line on standard output (where its log goes) is taken out, so the
/// output is cvae's alone (`--json` parses).
pub fn cvae(args: &[&str]) -> Output {
    let mut out = cvae_command().args(args).output().expect("the cvae binary runs");
    check_validation(&format!("cvae {}", args.join(" ")));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    out.stdout =
        text.lines().filter(|l| !l.starts_with("Validation Layer Info - ")).map(|l| format!("{l}\n")).collect::<String>().into_bytes();
    out
}

// ---- The Vulkan drivers and the validation layer -------------------------------------

/// The Vulkan drivers the GPU tests run on: two software drivers on the CPU, with
/// different compilers, subgroup widths and transcendental functions. What passes on
/// one only is a bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// Mesa's lavapipe (llvmpipe): Debian's mesa-vulkan-drivers.
    Lavapipe,
    /// Google's SwiftShader, as Debian's chromium package ships it.
    SwiftShader,
}

/// Where Debian's chromium package puts SwiftShader's Vulkan driver and the Khronos
/// validation layer (`CVAE_SWIFTSHADER_ICD` and `CVAE_VALIDATION_LAYER` point elsewhere).
const SWIFTSHADER_ICD: &str = "/usr/lib/chromium/vk_swiftshader_icd.json";
const VALIDATION_LAYER: &str = "/usr/lib/chromium/libVkLayer_khronos_validation.so";
/// The validation layer's setting for where its messages go.
const LOG_VAR: &str = "VK_KHRONOS_VALIDATION_LOG_FILENAME";
const GET_THEM: &str = "Every GPU test runs on lavapipe and SwiftShader under the Khronos validation layer.\n\
    On Debian or Ubuntu: sudo apt-get install -y mesa-vulkan-drivers chromium (chromium ships SwiftShader and the layer).";

impl Driver {
    pub const ALL: [Driver; 2] = [Driver::Lavapipe, Driver::SwiftShader];

    pub fn name(self) -> &'static str {
        match self {
            Driver::Lavapipe => "lavapipe",
            Driver::SwiftShader => "swiftshader",
        }
    }

    /// `--adapter` for this driver: a part of its adapter's name.
    pub fn adapter(self) -> cvae::gpu::AdapterChoice {
        cvae::gpu::AdapterChoice::Name(match self {
            Driver::Lavapipe => "llvmpipe".into(),
            Driver::SwiftShader => "SwiftShader".into(),
        })
    }

    /// A device on this driver, or a failure that says how to install it.
    pub fn open(self) -> cvae::gpu::Gpu {
        vulkan();
        let gpu = cvae::gpu::Gpu::open(self.adapter()).unwrap_or_else(|e| panic!("no {} adapter: {e:#}\n{GET_THEM}", self.name()));
        eprintln!("driver {}: {}", self.name(), gpu.name());
        gpu
    }
}

fn tmp_file(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vulkan");
    std::fs::create_dir_all(&d).expect("the tests' scratch folder");
    d.join(name)
}

/// The validation logs of this process and of the cvae processes it started.
static LOGS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn new_log(who: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let exe = std::env::current_exe().ok().and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).unwrap_or_default();
    let log = tmp_file(&format!("validation-{exe}-{}-{who}-{n}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    LOGS.lock().unwrap_or_else(|p| p.into_inner()).push(log.clone());
    log
}

/// Once per process, before any Vulkan instance: both drivers visible (SwiftShader added
/// beside the system's), the Khronos validation layer on for every instance, its
/// messages written to this process's log. Panics, saying how to get them, when the
/// driver or the layer is missing: the GPU tests fail, never skip.
pub fn vulkan() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        cvae::gpu::device::quiet_driver_noise();
        let icd = std::env::var("CVAE_SWIFTSHADER_ICD").unwrap_or_else(|_| SWIFTSHADER_ICD.into());
        let layer = std::env::var("CVAE_VALIDATION_LAYER").unwrap_or_else(|_| VALIDATION_LAYER.into());
        for (what, path) in [("SwiftShader's Vulkan driver", &icd), ("the Khronos validation layer", &layer)] {
            assert!(Path::new(path).is_file(), "{what} is not at {path}.\n{GET_THEM}");
        }
        // Chromium ships the layer without the manifest the Vulkan loader looks for.
        let manifest = tmp_file("VkLayer_khronos_validation.json");
        let json = serde_json::json!({
            "file_format_version": "1.2.0",
            "layer": {
                "name": "VK_LAYER_KHRONOS_validation", "type": "GLOBAL", "library_path": layer,
                "api_version": "1.3.0", "implementation_version": "1", "description": "Khronos validation layer"
            }
        });
        std::fs::write(&manifest, json.to_string()).expect("writing the layer manifest");
        let log = new_log("tests");
        // Safe in practice: the first GPU test of the process gets here before any thread
        // has a Vulkan instance, and the other tests wait on the Once.
        std::env::set_var("VK_ADD_DRIVER_FILES", &icd);
        std::env::set_var("VK_LAYER_PATH", manifest.parent().expect("a folder"));
        std::env::set_var("VK_INSTANCE_LAYERS", "VK_LAYER_KHRONOS_validation");
        std::env::set_var(LOG_VAR, &log);
        // The layer stops repeating a message after 10 of its kind by default: the
        // tolerated kind would hide an intolerable one with the same VUID.
        std::env::set_var("VK_KHRONOS_VALIDATION_ENABLE_MESSAGE_LIMIT", "false");
    });
}

/// The one kind of message tolerated: naga 30 gives every array an ArrayStride, also
/// the arrays in workgroup memory (the tiles of tiled.wgsl, the tree sums), which
/// Vulkan forbids there (gfx-rs/wgpu#7696, not fixed in a naga release yet). No WGSL
/// avoids it; `naga_portability.rs` holds a minimal case to tell when naga fixes it.
fn tolerated(message: &str) -> bool {
    message.contains("VUID-StandaloneSpirv-None-10684") && message.contains("the Workgroup storage class has an explicit layout")
}

/// Every message in the validation logs of this process and its cvae children so far,
/// each as "log path: message".
fn logged_messages() -> Vec<String> {
    let logs = LOGS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut out = Vec::new();
    for log in logs {
        let Ok(text) = std::fs::read_to_string(&log) else { continue };
        out.extend(text.split("Validation ").skip(1).map(|m| format!("{}: Validation {}", log.display(), m.trim())));
    }
    out
}

/// How many messages of the tolerated kind the logs hold: proof that the layer is on.
pub fn tolerated_messages() -> usize {
    logged_messages().iter().filter(|m| tolerated(m)).count()
}

/// The validation messages so far in every log of this process, but the tolerated kind.
pub fn validation_messages() -> Vec<String> {
    logged_messages().into_iter().filter(|m| !tolerated(m)).collect()
}

/// Fail if the validation layer has reported anything but the tolerated kind.
pub fn check_validation(what: &str) {
    let m = validation_messages();
    assert!(m.is_empty(), "{what}: the Khronos validation layer reported {} message(s):\n{}", m.len(), m.join("\n\n"));
}

/// Checks the validation logs when dropped, at the end of the test that holds it.
pub struct Validated(&'static str);

impl Drop for Validated {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            check_validation(self.0);
        }
    }
}

/// Set up the drivers and the layer (`vulkan`); the returned guard fails the test if
/// the layer reports anything by the time the test ends.
pub fn validated(test: &'static str) -> Validated {
    vulkan();
    Validated(test)
}

thread_local! {
    static DRIVER: std::cell::Cell<Driver> = const { std::cell::Cell::new(Driver::Lavapipe) };
}

/// The driver the running test is on (`on`); lavapipe for tests that run on one.
pub fn driver() -> Driver {
    DRIVER.with(|d| d.get())
}

/// Run `test` on `driver`, under the validation layer (libtest gives each test a thread).
pub fn on(driver: Driver, test: fn()) {
    let _v = validated(driver.name());
    DRIVER.with(|d| d.set(driver));
    test();
}

/// For each named test function, a module of that name with one test per driver:
/// `name::lavapipe` and `name::swiftshader`.
#[macro_export]
macro_rules! on_every_driver {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn lavapipe() {
                super::common::on(super::common::Driver::Lavapipe, super::$name);
            }
            #[test]
            fn swiftshader() {
                super::common::on(super::common::Driver::SwiftShader, super::$name);
            }
        }
    )*};
}
