//! Which kernel family runs each op of each layer: chosen by measurement, per adapter.
//!
//! The first time cvae meets an adapter (name, driver, backend, cvae version and its
//! shaders' text) with a model and batch size, it times every family the adapter offers on every op of
//! every layer at its real shape, checks each result against the others, keeps the
//! fastest, and caches the choice in the user's cache folder; later runs read it. A
//! training run writes its plan into `config.json` and the checkpoint, and `--resume`
//! uses that plan, so a resumed run computes with the same kernels (the same bits)
//! whatever the cache holds by then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use super::kernels::{submit_overhead_ns, wall_time_ns, Dispatch, Kernels};
use super::ops::{Ops, Variant, Weights};
use super::Gpu;
use crate::model::{Layer, LayerInfo, Model};

/// The three ops of a layer with weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Forward,
    BackwardInput,
    BackwardKernel,
}

impl Op {
    /// The op of a name as `name` gives it (anything else reads as the kernel gradient).
    pub fn from_name(name: &str) -> Op {
        match name {
            "forward" => Op::Forward,
            "backward_input" => Op::BackwardInput,
            _ => Op::BackwardKernel,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Op::Forward => "forward",
            Op::BackwardInput => "backward_input",
            Op::BackwardKernel => "backward_kernel",
        }
    }
}

/// The family of every (layer, op), keyed "encoder.conv2d_1 forward". A site missing
/// from the plan runs `Variant::Auto` (blocked where it fits, else portable): what
/// runs made before plans existed used, so their checkpoints resume exactly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Plan(pub BTreeMap<String, Variant>);

impl Plan {
    fn key(layer: &str, op: Op) -> String {
        format!("{layer} {}", op.name())
    }

    /// The variant for op `op` of the layer labelled `layer` (e.g. "decoder.dense_0").
    pub fn variant(&self, layer: &str, op: Op) -> Variant {
        self.0.get(&Self::key(layer, op)).copied().unwrap_or(Variant::Auto)
    }

    /// Every site of `model` forced to one variant (`--variant`).
    pub fn uniform(model: &Model, variant: Variant) -> Plan {
        Plan(sites(model).into_iter().map(|(l, op)| (Self::key(&label(model, l), op), variant)).collect())
    }

    /// This plan on `gpu`: a site whose family the adapter does not offer (a plan
    /// measured on another adapter, the shipped weights') runs `Variant::Auto`.
    pub fn for_device(&self, gpu: &Gpu) -> Plan {
        let offered = offered(gpu);
        Plan(self.0.iter().map(|(k, v)| (k.clone(), if offered.contains(v) { *v } else { Variant::Auto })).collect())
    }

    /// How many sites run each variant, e.g. "subgroup 9, blocked 5".
    pub fn summary(&self) -> String {
        let mut counts: BTreeMap<Variant, usize> = BTreeMap::new();
        for v in self.0.values() {
            *counts.entry(*v).or_default() += 1;
        }
        counts.iter().map(|(v, n)| format!("{} {n}", v.name())).collect::<Vec<_>>().join(", ")
    }
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Auto => "auto",
            Variant::Portable => "portable",
            Variant::Blocked => "blocked",
            Variant::Subgroup => "subgroup",
            Variant::Tiled => "tiled",
        }
    }
}

/// The families this device can run. The subgroup kernels are written for subgroups
/// of exactly 8 lanes (lavapipe on a 256-bit host): `Gpu` asks for the feature only there.
pub fn offered(gpu: &Gpu) -> Vec<Variant> {
    let mut v = vec![Variant::Portable, Variant::Blocked, Variant::Tiled];
    if gpu.features.contains(wgpu::Features::SUBGROUP) {
        v.push(Variant::Subgroup);
    }
    v
}

/// The layer's label as dispatches carry it: "encoder.conv2d_0".
fn label(model: &Model, l: &LayerInfo) -> String {
    let net = if model.encoder.iter().any(|e| std::ptr::eq(e, l)) { "encoder" } else { "decoder" };
    format!("{net}.{}", l.name)
}

/// Every (layer, op) training runs: all three ops of every layer with weights, but
/// the first layer's input gradient (its input is the data).
pub fn sites(model: &Model) -> Vec<(&LayerInfo, Op)> {
    let mut v = Vec::new();
    for (i, l) in model.layers().enumerate().filter(|(_, l)| l.kernel_param.is_some()) {
        v.push((l, Op::Forward));
        if i > 0 {
            v.push((l, Op::BackwardInput));
        }
        v.push((l, Op::BackwardKernel));
    }
    v
}

/// One site's measurements: milliseconds per family at the real batch (families cut on
/// the small batch have none), and families whose result disagreed with the portable
/// kernel's (never chosen).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiteTiming {
    pub site: String,
    pub ms: BTreeMap<Variant, f64>,
    pub rejected: Vec<(Variant, String)>,
}

/// A plan and the measurements it was chosen from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tuned {
    pub adapter: String,
    pub cvae: String,
    pub batch: usize,
    pub plan: Plan,
    pub timings: Vec<SiteTiming>,
}

/// Random inputs and output buffers of one site at its real shape.
struct SiteBuffers {
    x: wgpu::Buffer,
    dy: wgpu::Buffer,
    params: wgpu::Buffer,
    out: wgpu::Buffer,
    out_len: usize,
    kernel_len: usize,
}

fn site_buffers(gpu: &Gpu, l: &LayerInfo, batch: usize, op: Op) -> SiteBuffers {
    let (in_len, out_len) = (batch * l.input.len(), batch * l.output.len());
    let kernel_len = match l.layer {
        Layer::Dense { units, .. } => l.input.len() * units,
        _ => l.conv_geom(batch).map(|g| g.kernel_len()).unwrap_or(0),
    };
    let bias = match l.layer {
        Layer::Conv2D { filters, .. } | Layer::Conv2DTranspose { filters, .. } => filters,
        Layer::Dense { units, .. } => units,
        Layer::Flatten | Layer::Reshape { .. } => 0,
    };
    let rand = |n: usize, tag: u32| -> Vec<f32> {
        let r = crate::rng::Rng::new(0x7157);
        (0..n).map(|i| 2.0 * r.uniform(crate::rng::Stream::Init, tag, i as u32) - 1.0).collect()
    };
    let len = match op {
        Op::Forward => out_len,
        Op::BackwardInput => in_len,
        Op::BackwardKernel => kernel_len + bias,
    };
    SiteBuffers {
        x: gpu.upload("tune x", &rand(in_len, 1)),
        dy: gpu.upload("tune dy", &rand(out_len, 2)),
        params: gpu.upload("tune params", &rand(kernel_len + bias, 3)),
        out: gpu.zeros("tune out", len),
        out_len: if op == Op::BackwardKernel { kernel_len } else { len },
        kernel_len,
    }
}

/// The dispatch of one site with one family: the layer's own launcher.
fn site_dispatch(ops: Ops<'_>, l: &LayerInfo, batch: usize, op: Op, b: &SiteBuffers) -> Result<Dispatch> {
    let w = Weights { params: &b.params, w_off: 0, b_off: b.kernel_len };
    let gw = Weights { params: &b.out, w_off: 0, b_off: b.kernel_len };
    let geom = || l.conv_geom(batch).ok_or_else(|| anyhow!("{} has no conv geometry", l.name));
    match (l.layer, op) {
        (Layer::Conv2D { .. }, Op::Forward) => ops.conv2d_forward(&geom()?, &b.x, w, false, &b.out),
        (Layer::Conv2D { .. }, Op::BackwardInput) => ops.conv2d_backward_input(&geom()?, &b.dy, w, &b.out),
        (Layer::Conv2D { .. }, Op::BackwardKernel) => ops.conv2d_backward_kernel(&geom()?, &b.x, &b.dy, gw),
        (Layer::Conv2DTranspose { .. }, Op::Forward) => ops.conv2d_transpose_forward(&geom()?, &b.x, w, false, &b.out),
        (Layer::Conv2DTranspose { .. }, Op::BackwardInput) => ops.conv2d_transpose_backward_input(&geom()?, &b.dy, w, &b.out),
        (Layer::Conv2DTranspose { .. }, Op::BackwardKernel) => ops.conv2d_transpose_backward_kernel(&geom()?, &b.x, &b.dy, gw),
        (Layer::Dense { units, .. }, Op::Forward) => ops.dense_forward(batch, l.input.len(), units, &b.x, w, false, &b.out),
        (Layer::Dense { units, .. }, Op::BackwardInput) => ops.dense_backward_input(batch, l.input.len(), units, &b.dy, w, &b.out),
        (Layer::Dense { units, .. }, Op::BackwardKernel) => ops.dense_backward_kernel(batch, l.input.len(), units, &b.x, &b.dy, gw),
        _ => Err(anyhow!("{} has no weights", l.name)),
    }
}

/// Milliseconds of one run of `d` by the wall clock, less an empty submission's cost
/// (`baseline_ns`). Not timestamp queries: lavapipe's stop covering the work after a
/// kernel writes a storage texture (`kernels::profile`).
fn time_once(gpu: &Gpu, kernels: &Kernels, d: &Dispatch, baseline_ns: f64) -> Result<f64> {
    Ok(wall_time_ns(gpu, kernels, d, baseline_ns)? / 1e6)
}

/// Whether `got` agrees with `want` up to f32 rounding of the op's sums (a broken or
/// mis-specialised kernel gives garbage, not rounding differences): within 1e-3 of
/// the result's largest magnitude, elementwise.
fn agrees(got: &[f32], want: &[f32]) -> Result<(), String> {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    // NaN fails too: it is not within anything.
    let within = |g: f32, w: f32| (g - w).abs() <= 1e-3 * scale;
    match got.iter().zip(want).enumerate().find(|(_, (g, w))| !within(**g, **w)) {
        Some((i, (g, w))) => Err(format!("element {i} is {g}, the other families give {w}")),
        None => Ok(()),
    }
}

/// Run every family on one site at `batch`, timed once, each result checked against
/// the portable kernel's (the simplest: the reference of the parity tests). Returns
/// the families that agree, with their times, and records those that do not.
#[allow(clippy::too_many_arguments)]
fn screen(
    gpu: &Gpu,
    kernels: &Kernels,
    l: &LayerInfo,
    op: Op,
    batch: usize,
    offered: &[Variant],
    base: f64,
    timing: &mut SiteTiming,
) -> Result<Vec<(Variant, f64)>> {
    let b = site_buffers(gpu, l, batch, op);
    let mut outputs = Vec::new();
    for &v in offered {
        let d = site_dispatch(Ops { gpu, k: kernels, variant: v, packs: None }, l, batch, op, &b)
            .with_context(|| format!("{} ({})", timing.site, v.name()))?;
        let ms = time_once(gpu, kernels, &d, base)?;
        let mut got: Vec<f32> = gpu.read(&b.out)?;
        got.truncate(b.out_len);
        outputs.push((v, ms, got));
    }
    let reference = outputs.iter().find(|o| o.0 == Variant::Portable).map(|o| o.2.clone()).unwrap_or_default();
    let mut ok = Vec::new();
    for (v, ms, got) in outputs {
        match agrees(&got, &reference) {
            Ok(()) => ok.push((v, ms)),
            Err(why) => timing.rejected.push((v, why)),
        }
    }
    Ok(ok)
}

/// Choose the family of one site: all of them on a small batch (cheap, and where results
/// are checked), then the contenders (within 4x of the best there) at the real batch, in
/// rounds: all once, again those within 1.5x of the best; the minimum counts, so a
/// shared machine's noise has to hit the same family twice to mislead.
#[allow(clippy::too_many_arguments)]
fn tune_site(
    gpu: &Gpu,
    kernels: &Kernels,
    model: &Model,
    l: &LayerInfo,
    op: Op,
    batch: usize,
    offered: &[Variant],
    base: f64,
) -> Result<(Variant, SiteTiming)> {
    let site = format!("{} {}", label(model, l), op.name());
    let mut timing = SiteTiming { site: site.clone(), ms: BTreeMap::new(), rejected: Vec::new() };
    let small = screen(gpu, kernels, l, op, batch.div_ceil(8), offered, base, &mut timing)?;
    let best_small = small.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
    let contenders: Vec<Variant> = small.iter().filter(|s| s.1 <= 4.0 * best_small).map(|s| s.0).collect();
    let b = site_buffers(gpu, l, batch, op);
    let mut runs = Vec::new();
    for &v in &contenders {
        let d = site_dispatch(Ops { gpu, k: kernels, variant: v, packs: None }, l, batch, op, &b)?;
        let ms = time_once(gpu, kernels, &d, base)?;
        runs.push((v, d, ms));
    }
    let best = runs.iter().map(|r| r.2).fold(f64::INFINITY, f64::min);
    for r in runs.iter_mut().filter(|r| r.2 < 1.5 * best) {
        r.2 = r.2.min(time_once(gpu, kernels, &r.1, base)?);
    }
    for (v, _, ms) in &runs {
        timing.ms.insert(*v, *ms);
    }
    let (v, _) = timing
        .ms
        .iter()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .ok_or_else(|| anyhow!("{site}: no kernel family agreed with the portable one"))?;
    Ok((*v, timing))
}

/// Measure every site of `model` at `batch` and choose.
pub fn tune(gpu: &Gpu, kernels: &Kernels, model: &Model, batch: usize) -> Result<Tuned> {
    let offered = offered(gpu);
    // Every kernel once on a batch of 1 first: a driver that compiles at the first
    // dispatch (lavapipe) does it here, so no family is timed with its compilation.
    // lavapipe compiles on one thread per device, so on a CPU adapter a second device
    // compiles half of them (most of a cold start otherwise leaves a core idle).
    let warm_list = |gpu: &Gpu, kernels: &Kernels| -> Result<(Vec<SiteBuffers>, Vec<Dispatch>)> {
        let (mut bufs, mut ds) = (Vec::new(), Vec::new());
        for (l, op) in sites(model) {
            let b = site_buffers(gpu, l, 1, op);
            for &v in &offered {
                ds.push(site_dispatch(Ops { gpu, k: kernels, variant: v, packs: None }, l, 1, op, &b)?);
            }
            bufs.push(b);
        }
        Ok((bufs, ds))
    };
    let (_keep, warm) = warm_list(gpu, kernels)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Without a second device the warm-up is only slower, so failing to open one is no error.
    let helper = if gpu.info.device_type == wgpu::DeviceType::Cpu && cores > 1 { gpu.sibling().ok() } else { None };
    match &helper {
        Some(hg) => {
            let hk = Kernels::new(hg)?;
            let (_hkeep, hwarm) = warm_list(hg, &hk)?;
            kernels.warm(gpu, &warm, Some((hg, &hk, &hwarm)))?;
        }
        None => kernels.warm(gpu, &warm, None)?,
    }
    drop(warm);
    let base = submit_overhead_ns(gpu)?;
    let mut plan = Plan::default();
    let mut timings = Vec::new();
    for (l, op) in sites(model) {
        let (v, t) = tune_site(gpu, kernels, model, l, op, batch, &offered, base)?;
        plan.0.insert(Plan::key(&label(model, l), op), v);
        timings.push(t);
    }
    Ok(Tuned { adapter: gpu.name(), cvae: env!("CARGO_PKG_VERSION").to_string(), batch, plan, timings })
}

/// The user's cache folder for cvae: `$CVAE_CACHE_DIR`, or the platform's cache
/// folder (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS,
/// `%LOCALAPPDATA%` on Windows) with `cvae` appended.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CVAE_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    let base = if cfg!(target_os = "windows") {
        std::env::var_os("LOCALAPPDATA").map(PathBuf::from)
    } else if cfg!(target_os = "macos") {
        home().map(|h| h.join("Library/Caches"))
    } else {
        std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| home().map(|h| h.join(".cache")))
    };
    base.map(|b| b.join("cvae"))
}

/// A software adapter (lavapipe) runs as fast as the CPU under it: the host's CPU
/// model and Mesa's CPU-feature override belong to its identity.
fn host_cpu(gpu: &Gpu) -> String {
    if gpu.info.device_type != wgpu::DeviceType::Cpu {
        return String::new();
    }
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default();
    format!("{model}|{}", std::env::var("GALLIUM_OVERRIDE_CPU_CAPS").unwrap_or_default())
}

/// FNV-1a: a stable hash for file names (std's hasher may change between releases).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The cache file for this adapter, cvae version and kernels, model and batch, in `dir`.
fn cache_file(dir: Option<PathBuf>, gpu: &Gpu, model: &Model, batch: usize) -> Option<PathBuf> {
    let i = &gpu.info;
    // The kernels themselves, not only the version: a changed shader is a new contest.
    let shaders: String = super::kernels::SHADER_FILES.iter().map(|(_, src)| *src).collect();
    let key = format!(
        "{}|{}|{}|{:?}|{}|{}|{:016x}|{}|{}|{}",
        i.name,
        i.driver,
        i.driver_info,
        i.backend,
        host_cpu(gpu),
        env!("CARGO_PKG_VERSION"),
        fnv1a(&shaders),
        model.preset,
        model.latent,
        batch
    );
    let hash = fnv1a(&key);
    dir.map(|d| d.join(format!("kernels-{hash:016x}.json")))
}

/// Where a plan came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--variant` named a family.
    Forced,
    /// The cache held a plan for this adapter, cvae version, model and batch.
    Cached,
    /// Measured in this run (and cached).
    Measured,
}

/// A chosen plan, with the measurements behind it when there were any.
pub struct Choice {
    pub plan: Plan,
    pub tuned: Option<Tuned>,
    pub source: Source,
}

/// The plan for `model` at `batch` on this adapter: forced to one family, read from
/// the cache (in `cache`, or the user's cache folder), or measured now (saying so in
/// one line unless `quiet`) and cached.
pub fn choose(
    gpu: &Gpu,
    kernels: &Kernels,
    model: &Model,
    batch: usize,
    force: Variant,
    cache: Option<&Path>,
    quiet: bool,
) -> Result<Choice> {
    if force != Variant::Auto {
        return Ok(Choice { plan: Plan::uniform(model, force), tuned: None, source: Source::Forced });
    }
    let file = cache_file(cache.map(Path::to_path_buf).or_else(cache_dir), gpu, model, batch);
    if let Some(t) = file.as_ref().and_then(|f| std::fs::read(f).ok()).and_then(|b| serde_json::from_slice::<Tuned>(&b).ok()) {
        if t.plan.0.len() == sites(model).len() {
            return Ok(Choice { plan: t.plan.clone(), tuned: Some(t), source: Source::Cached });
        }
    }
    if !quiet {
        let whereto = file.as_ref().map(|f| format!("; cached in {}", f.display())).unwrap_or_default();
        eprint!("choosing kernels for {} by timing every family on every layer (once per adapter{whereto}) ...", gpu.info.name);
    }
    let t0 = Instant::now();
    let tuned = tune(gpu, kernels, model, batch)?;
    if !quiet {
        eprintln!(" {:.1} s: {}", t0.elapsed().as_secs_f64(), tuned.plan.summary());
    }
    if let Some(f) = &file {
        // A cache that cannot be written only costs the next run the same measurement.
        let _ = f.parent().map(std::fs::create_dir_all);
        let _ = serde_json::to_vec_pretty(&tuned).map(|b| crate::atomic_write::write_atomic(f, &b));
    }
    Ok(Choice { plan: tuned.plan.clone(), tuned: Some(tuned), source: Source::Measured })
}
