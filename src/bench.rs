//! `cvae bench`: where the time of a training step goes, and how close the kernels
//! come to what the adapter can do.

use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::data::{Dataset, Split};
use crate::gpu::kernels::{profile_checked, Dispatch, Kernels};
use crate::gpu::ops::{Ops, Variant, Weights};
use crate::gpu::plan::{self, Plan, SiteTiming};
use crate::gpu::runner::Runner;
use crate::gpu::trainer::{check_limits, KernelTime, Trainer, TrainerSpec};
use crate::gpu::{AdapterChoice, Gpu};
use crate::model::{Layer, Model, Preset};

pub struct BenchArgs {
    pub adapter: AdapterChoice,
    pub preset: Preset,
    pub batch: Option<usize>,
    pub steps: usize,
    pub reps: usize,
    pub json: bool,
    pub kernel: Option<String>,
    pub layer: Option<String>,
    pub variant: Variant,
}

#[derive(Serialize, Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        };
        Spread { median, min: v.first().copied().unwrap_or(f64::NAN), max: v.last().copied().unwrap_or(f64::NAN) }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} ({:.2}-{:.2})", self.median, self.min, self.max)
    }
}

#[derive(Serialize)]
pub struct KernelRow {
    pub entry: String,
    pub layer: String,
    pub calls: usize,
    pub ms: f64,
    pub gflops: Option<f64>,
    pub share: f64,
}

#[derive(Serialize)]
pub struct Report {
    pub adapter: String,
    pub preset: String,
    pub batch: usize,
    pub steps: usize,
    pub reps: usize,
    pub variant: String,
    pub first_step_seconds: f64,
    /// Where the first step's time went, in order: (phase, seconds).
    pub first_step_phases: Vec<(String, f64)>,
    pub train_images_per_second: Spread,
    pub train_ms_per_step: Spread,
    pub eval_images_per_second: Spread,
    pub host_ms_per_step: Spread,
    /// Time inside `queue.submit`: a driver that executes on submission (lavapipe) spends the device time here.
    pub submit_ms_per_step: Spread,
    pub device_ms_per_step: Option<f64>,
    pub allocated_mib: f64,
    pub step_gflop: f64,
    pub step_gflops: f64,
    pub ceiling_gflops: Option<f64>,
    pub fraction_of_ceiling: Option<f64>,
    /// The family whose 1024^3 GEMM set the ceiling.
    pub ceiling_variant: Option<String>,
    pub kernels: Vec<KernelRow>,
    /// How the kernels were chosen: forced, cached or measured.
    pub kernel_source: String,
    /// How the per-kernel times were taken.
    pub kernel_timing: String,
    /// The family of every op of every layer.
    pub plan: Plan,
    /// The measurements behind the choice (milliseconds per family per op).
    pub choice: Vec<SiteTiming>,
}

/// GFLOP/s of the best matrix multiply over every family this adapter offers (the
/// subgroup one included), on a 1024^3 problem, and which family it was. None without
/// timestamp queries.
pub fn ceiling(gpu: &Gpu, kernels: &Kernels) -> Result<Option<(f64, Variant)>> {
    let mut best: Option<(f64, Variant)> = None;
    for v in plan::offered(gpu).into_iter().filter(|v| *v != Variant::Portable) {
        match ceiling_at(gpu, kernels, v, 1024)? {
            Some(g) if best.is_none_or(|(b, _)| g > b) => best = Some((g, v)),
            Some(_) => {}
            None => return Ok(None),
        }
    }
    Ok(best)
}

/// GFLOP/s of dense_forward on an n x n x n problem.
pub fn ceiling_at(gpu: &Gpu, kernels: &Kernels, variant: Variant, n: usize) -> Result<Option<f64>> {
    let x = gpu.zeros("ceiling x", n * n);
    let w = gpu.zeros("ceiling w", n * n + n);
    let y = gpu.zeros("ceiling y", n * n);
    let ops = Ops { gpu, k: kernels, variant, packs: None };
    let d = ops.dense_forward(n, n, n, &x, Weights { params: &w, w_off: 0, b_off: n * n }, false, &y)?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        best = best.min(profile_checked(gpu, kernels, std::slice::from_ref(&d))?.0[0]);
    }
    Ok(Some(2.0 * (n * n * n) as f64 / best))
}

/// Run the benchmark; None when it ran the kernel sandbox instead (which prints as it goes).
pub fn run(a: &BenchArgs) -> Result<Option<Report>> {
    if a.steps == 0 || a.reps == 0 {
        bail!("--steps and --reps must be at least 1");
    }
    let t_start = Instant::now();
    let mut phases = Phases::new();
    // Decoded on another core while the device opens and the shaders are checked, as `train` does.
    let data = std::thread::spawn(Dataset::embedded);
    let gpu = Gpu::open(a.adapter.clone())?;
    phases.mark("adapter");
    let kernels = Kernels::new(&gpu)?;
    phases.mark("shaders checked");
    let model = Model::preset(a.preset, a.preset.default_latent(), a.preset.default_kl())?;
    let batch = a.batch.unwrap_or(a.preset.default_batch());
    if batch == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let Some(k) = &a.kernel {
        sandbox(&gpu, &kernels, &model, batch, k, a.layer.as_deref(), a.variant)?;
        return Ok(None);
    }
    let data = data.join().map_err(|_| anyhow!("decoding the built-in MNIST panicked"))??;
    phases.mark("MNIST");
    let (mut train, mut test) = (data.train, data.test);
    let need = batch * (a.steps * a.reps + 3);
    if need > train.len() {
        bail!("--steps x --reps x --batch-size needs {need} training images; MNIST has {}", train.len());
    }
    train.truncate(need);
    test.truncate((batch * a.steps).min(test.len()));
    let init = model.init_params(0);
    check_limits(&gpu, &model, batch, &train)?;
    // As a training run does: the cached choice, or a measurement now (in the first step's time).
    let choice = plan::choose(&gpu, &kernels, &model, batch, a.variant, None, a.json)?;
    phases.mark("choosing kernels");
    let spec = TrainerSpec {
        model: &model,
        optimizer: a.preset.default_optimizer(),
        batch,
        seed: 0,
        binarize: true,
        train: &train,
        test: &test,
        params: &init,
        fixed_z: &[],
        plan: choice.plan.clone(),
    };
    // Building the trainer builds its pipelines (wgpu's translation, the driver's
    // front end); lavapipe compiles each to machine code at its first dispatch.
    let mut trainer = Trainer::new(&gpu, &kernels, spec)?;
    phases.mark("pipelines");
    trainer.begin_epoch(1);
    trainer.train_step(0)?;
    trainer.finish()?;
    phases.mark("first dispatches");
    let first_step_seconds = t_start.elapsed().as_secs_f64();
    trainer.train_step(1)?;
    trainer.train_step(2)?;
    trainer.finish()?;
    let timing = time_training(&mut trainer, batch, a.steps, a.reps)?;
    let eval = time_evaluation(&gpu, &kernels, &model, &init, &test, batch, &choice.plan, a.reps)?;
    let prof = trainer.profile_train_step(0)?;
    let step_flops = trainer.train_dispatch_flops();
    let measured = Measured { first_step_seconds, first_step_phases: phases.0, timing, eval, prof, step_flops };
    Ok(Some(report(&gpu, &kernels, a, batch, choice, measured)?))
}

/// Seconds between marks: where start-up time goes.
struct Phases(Vec<(String, f64)>, Instant);

impl Phases {
    fn new() -> Phases {
        Phases(Vec::new(), Instant::now())
    }
    fn mark(&mut self, phase: &str) {
        self.0.push((phase.to_string(), self.1.elapsed().as_secs_f64()));
        self.1 = Instant::now();
    }
}

/// What `run` measured, for the report.
struct Measured {
    first_step_seconds: f64,
    first_step_phases: Vec<(String, f64)>,
    timing: Timing,
    eval: Vec<f64>,
    prof: (Vec<KernelTime>, &'static str),
    step_flops: f64,
}

fn report(gpu: &Gpu, kernels: &Kernels, a: &BenchArgs, batch: usize, choice: plan::Choice, m: Measured) -> Result<Report> {
    let Measured { first_step_seconds, first_step_phases, timing, eval, prof, step_flops } = m;
    let train_ms = Spread::of(timing.ms);
    let step_gflops = step_flops / (train_ms.median * 1e6);
    let (ceiling, ceiling_variant) = match ceiling(gpu, kernels)? {
        Some((g, v)) => (Some(g), Some(v.name().to_string())),
        None => (None, None),
    };
    let (rows, device_ms) = kernel_rows(Some(&prof.0));
    Ok(Report {
        adapter: gpu.name(),
        preset: a.preset.name().into(),
        batch,
        steps: a.steps,
        reps: a.reps,
        variant: format!("{:?}", a.variant).to_lowercase(),
        first_step_seconds,
        first_step_phases,
        train_images_per_second: Spread::of(timing.ips),
        train_ms_per_step: train_ms,
        eval_images_per_second: Spread::of(eval),
        host_ms_per_step: Spread::of(timing.host),
        submit_ms_per_step: Spread::of(timing.submit),
        device_ms_per_step: device_ms,
        allocated_mib: gpu.allocated_bytes() as f64 / (1 << 20) as f64,
        step_gflop: step_flops / 1e9,
        step_gflops,
        ceiling_gflops: ceiling,
        fraction_of_ceiling: ceiling.map(|c| step_gflops / c),
        ceiling_variant,
        kernels: rows,
        kernel_source: format!("{:?}", choice.source).to_lowercase(),
        kernel_timing: prof.1.to_string(),
        choice: choice.tuned.map(|t| t.timings).unwrap_or_default(),
        plan: choice.plan,
    })
}

/// Per repetition: images/s, ms per step, host ms per step and ms inside submit.
struct Timing {
    ips: Vec<f64>,
    ms: Vec<f64>,
    host: Vec<f64>,
    submit: Vec<f64>,
}

/// `reps` repetitions of `steps` training steps, after the three warm-up steps.
fn time_training(trainer: &mut Trainer<'_>, batch: usize, steps: usize, reps: usize) -> Result<Timing> {
    let mut t = Timing { ips: Vec::new(), ms: Vec::new(), host: Vec::new(), submit: Vec::new() };
    let mut j = 3;
    for _ in 0..reps {
        let t0 = Instant::now();
        let mut h = 0.0;
        let (_, submitted) = trainer.host_timing();
        for _ in 0..steps {
            let th = Instant::now();
            let (waited, sub) = trainer.host_timing();
            trainer.train_step(j)?;
            // Host work only: time waiting for the device, and inside the driver's
            // submit (lavapipe runs the work right there), is not overhead.
            let (waited_after, sub_after) = trainer.host_timing();
            h += th.elapsed().as_secs_f64() - (waited_after - waited) - (sub_after - sub);
            j += 1;
        }
        trainer.finish()?;
        let dt = t0.elapsed().as_secs_f64();
        t.submit.push(1e3 * (trainer.host_timing().1 - submitted) / steps as f64);
        t.ips.push((steps * batch) as f64 / dt);
        t.ms.push(1e3 * dt / steps as f64);
        t.host.push(1e3 * h / steps as f64);
    }
    Ok(t)
}

/// Images/s of `cvae eval` with one sample (encode, draw, decode, loss terms) over the
/// test images, through the `Runner` it uses, once per repetition.
#[allow(clippy::too_many_arguments)]
fn time_evaluation(
    gpu: &Gpu,
    kernels: &Kernels,
    model: &Model,
    params: &[f32],
    test: &Split,
    batch: usize,
    plan: &Plan,
    reps: usize,
) -> Result<Vec<f64>> {
    let mut runner = Runner::new(gpu, kernels, model, params, batch, plan.clone())?;
    let x = test.to_f32(true);
    let key = crate::rng::Rng::new(0).key(crate::rng::Stream::Importance);
    let mut eval = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        runner.importance_terms(&x, 0, 1, key, &mut |_| {})?;
        eval.push(test.len() as f64 / t0.elapsed().as_secs_f64());
    }
    Ok(eval)
}

/// The per-kernel table from a profiled step (rows by time, largest first) and the
/// device time of the step; empty without timestamp queries.
fn kernel_rows(prof: Option<&[KernelTime]>) -> (Vec<KernelRow>, Option<f64>) {
    let Some(p) = prof else { return (Vec::new(), None) };
    let total: f64 = p.iter().map(|r| r.ns).sum();
    let mut rows: Vec<KernelRow> = Vec::new();
    for k in p {
        match rows.iter_mut().find(|r| r.entry == k.entry && r.layer == k.label) {
            Some(r) => {
                r.calls += 1;
                r.ms += k.ns / 1e6;
                r.gflops = r.gflops.map(|g| g + k.flops / 1e9);
            }
            None => rows.push(KernelRow {
                entry: k.entry.clone(),
                layer: k.label.clone(),
                calls: 1,
                ms: k.ns / 1e6,
                gflops: (k.flops > 0.0).then_some(k.flops / 1e9),
                share: 0.0,
            }),
        }
    }
    for r in rows.iter_mut() {
        // gflops held the GFLOP count so far; turn it into a rate.
        r.gflops = r.gflops.map(|g| g / (r.ms / 1e3));
        r.share = r.ms * 1e6 / total;
    }
    rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    (rows, Some(total / 1e6))
}

pub fn print(r: &Report) {
    println!("adapter: {}", r.adapter);
    println!("preset {} batch {} variant {}, {} steps x {} repetitions (median, min-max)", r.preset, r.batch, r.variant, r.steps, r.reps);
    let phases: Vec<String> = r.first_step_phases.iter().map(|(p, s)| format!("{p} {s:.2}")).collect();
    println!("first step: {:.2} s ({} s)", r.first_step_seconds, phases.join(", "));
    println!("training:   {} images/s, {} ms/step", r.train_images_per_second, r.train_ms_per_step);
    println!("evaluation: {} images/s (forward only)", r.eval_images_per_second);
    match r.device_ms_per_step {
        Some(d) => println!(
            "host {} ms/step (encoding) against device {:.2} ms/step ({:.1}% overhead)",
            r.host_ms_per_step,
            d,
            100.0 * r.host_ms_per_step.median / d
        ),
        None => println!("host {} ms/step (encoding); no device time: the adapter lacks TIMESTAMP_QUERY", r.host_ms_per_step),
    }
    println!(
        "inside queue.submit: {} ms/step (a driver that runs the work on submission, as lavapipe does, spends it here)",
        r.submit_ms_per_step
    );
    println!("device memory allocated by cvae: {:.1} MiB", r.allocated_mib);
    match (r.ceiling_gflops, r.fraction_of_ceiling) {
        (Some(c), Some(f)) => println!(
            "step: {:.2} GFLOP at {:.2} GFLOP/s = {:.0}% of the ceiling ({:.2} GFLOP/s: the best 1024^3 matmul over all families, {})",
            r.step_gflop,
            r.step_gflops,
            100.0 * f,
            c,
            r.ceiling_variant.as_deref().unwrap_or("?")
        ),
        _ => println!("step: {:.2} GFLOP at {:.2} GFLOP/s (no ceiling without TIMESTAMP_QUERY)", r.step_gflop, r.step_gflops),
    }
    print_choice(r);
    println!("\nper-kernel times of one step, by {}:", r.kernel_timing);
    println!("\n{:<34} {:<28} {:>5} {:>9} {:>9} {:>8} {:>7}", "entry point", "layer", "calls", "ms/step", "GFLOP/s", "of ceil", "share");
    for k in &r.kernels {
        let g = k.gflops.map(|g| format!("{g:.2}")).unwrap_or_else(|| "-".into());
        let f = match (k.gflops, r.ceiling_gflops) {
            (Some(g), Some(c)) => format!("{:.0}%", 100.0 * g / c),
            _ => "-".into(),
        };
        println!("{:<34} {:<28} {:>5} {:>9.3} {:>9} {:>8} {:>6.1}%", k.entry, k.layer, k.calls, k.ms, g, f, 100.0 * k.share);
    }
}

/// The family chosen for every op of every layer, with every family's time.
fn print_choice(r: &Report) {
    println!("\nkernels {} ({}):", r.kernel_source, r.plan.summary());
    if r.choice.is_empty() {
        return;
    }
    let families = [Variant::Subgroup, Variant::Blocked, Variant::Tiled, Variant::Portable];
    print!("{:<44} {:<9}", "layer op", "chosen");
    for f in families {
        print!(" {:>12}", format!("{} ms", f.name()));
    }
    println!();
    for t in &r.choice {
        let (layer, op) = t.site.rsplit_once(' ').unwrap_or((&t.site, ""));
        let chosen = r.plan.variant(layer, plan::Op::from_name(op));
        print!("{:<44} {:<9}", t.site, chosen.name());
        for f in families {
            let cell = match (t.ms.get(&f), t.rejected.iter().any(|(v, _)| *v == f)) {
                (_, true) => "wrong".to_string(),
                (Some(ms), _) => format!("{ms:.2}"),
                (None, _) => "-".to_string(),
            };
            print!(" {cell:>12}");
        }
        println!();
    }
}

/// Run one kernel's variants on one layer's shape: check each against the CPU
/// reference, then time it (median of 5 with timestamp queries). A forced `only`
/// variant runs that family alone.
fn sandbox(gpu: &Gpu, kernels: &Kernels, model: &Model, batch: usize, entry: &str, layer: Option<&str>, only: Variant) -> Result<()> {
    let name = layer.ok_or_else(|| anyhow!("--kernel needs --layer (one of: {})", layer_names(model).join(", ")))?;
    let (net, lname) = name.split_once('.').ok_or_else(|| anyhow!("--layer takes encoder.NAME or decoder.NAME, got {name}"))?;
    let layers = if net == "encoder" { &model.encoder } else { &model.decoder };
    let l = layers.iter().find(|l| l.name == lname).ok_or_else(|| anyhow!("no layer {name}; layers: {}", layer_names(model).join(", ")))?;
    println!("{entry} on {name} at batch {batch}");
    for variant in plan::offered(gpu).into_iter().filter(|&v| only == Variant::Auto || v == only) {
        let o = Ops { gpu, k: kernels, variant, packs: None };
        let case = match l.layer {
            Layer::Conv2D { .. } | Layer::Conv2DTranspose { .. } => conv_case(o, l, batch, entry)?,
            Layer::Dense { units, .. } => dense_case(o, l.input.len(), units, batch, entry)?,
            _ => bail!("{name} has no weights to benchmark"),
        }
        .ok_or_else(|| {
            anyhow!("{entry} does not apply to {name}; try <op>_forward, <op>_backward_input or <op>_backward_kernel for its op")
        })?;
        check_and_time(gpu, kernels, variant, &case)?;
    }
    Ok(())
}

/// One sandbox run: the dispatch, the buffer it writes, and the CPU's answer.
struct Case {
    dispatch: Dispatch,
    out: wgpu::Buffer,
    want: Vec<f32>,
}

/// Deterministic values in [-1, 1) for the sandbox's inputs.
fn rand(n: usize, tag: u32) -> Vec<f32> {
    let r = crate::rng::Rng::new(99);
    (0..n).map(|i| 2.0 * r.uniform(crate::rng::Stream::Init, tag, i as u32) - 1.0).collect()
}

/// Random input, kernel (+ bias 0.1) and output gradient on the device.
struct Inputs {
    x: Vec<f32>,
    k: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
    xb: wgpu::Buffer,
    pb: wgpu::Buffer,
    dyb: wgpu::Buffer,
}

fn inputs(gpu: &Gpu, x_len: usize, k_len: usize, bias: usize, dy_len: usize) -> Inputs {
    let (x, k, dy) = (rand(x_len, 1), rand(k_len, 2), rand(dy_len, 3));
    let b = vec![0.1f32; bias];
    let mut p = k.clone();
    p.extend_from_slice(&b);
    Inputs { xb: gpu.upload("x", &x), pb: gpu.upload("p", &p), dyb: gpu.upload("dy", &dy), x, k, b, dy }
}

/// A Conv2D or Conv2DTranspose op of layer `l`; None when `entry` is not one of its ops.
fn conv_case(o: Ops<'_>, l: &crate::model::LayerInfo, batch: usize, entry: &str) -> Result<Option<Case>> {
    use crate::cpu::{conv2d as c, conv2d_transpose as ct};
    let gpu = o.gpu;
    let g = l.conv_geom(batch).context("conv layer")?;
    let t = matches!(l.layer, Layer::Conv2DTranspose { .. });
    let i = inputs(gpu, g.in_len(), g.kernel_len(), g.out_c, g.out_len());
    let w = Weights { params: &i.pb, w_off: 0, b_off: i.k.len() };
    let lin = crate::model::Activation::Linear;
    let op = entry.trim_start_matches(if t { "conv2d_transpose_" } else { "conv2d_" });
    let case = match (op, t) {
        ("forward", false) => {
            let y = gpu.zeros("y", g.out_len());
            Case { dispatch: o.conv2d_forward(&g, &i.xb, w, false, &y)?, out: y, want: c::conv2d_forward(&g, &i.x, &i.k, &i.b, lin) }
        }
        ("forward", true) => {
            let y = gpu.zeros("y", g.out_len());
            let want = ct::conv2d_transpose_forward(&g, &i.x, &i.k, &i.b, lin);
            Case { dispatch: o.conv2d_transpose_forward(&g, &i.xb, w, false, &y)?, out: y, want }
        }
        ("backward_input", false) => {
            let dx = gpu.zeros("dx", g.in_len());
            Case { dispatch: o.conv2d_backward_input(&g, &i.dyb, w, &dx)?, out: dx, want: c::conv2d_backward_input(&g, &i.dy, &i.k) }
        }
        ("backward_input", true) => {
            let dx = gpu.zeros("dx", g.in_len());
            let want = ct::conv2d_transpose_backward_input(&g, &i.dy, &i.k);
            Case { dispatch: o.conv2d_transpose_backward_input(&g, &i.dyb, w, &dx)?, out: dx, want }
        }
        ("backward_kernel", _) => {
            let dk = gpu.zeros("dk", g.kernel_len() + g.out_c);
            let gw = Weights { params: &dk, w_off: 0, b_off: i.k.len() };
            let (dispatch, want) = if t {
                (o.conv2d_transpose_backward_kernel(&g, &i.xb, &i.dyb, gw)?, ct::conv2d_transpose_backward_kernel(&g, &i.x, &i.dy))
            } else {
                (o.conv2d_backward_kernel(&g, &i.xb, &i.dyb, gw)?, c::conv2d_backward_kernel(&g, &i.x, &i.dy))
            };
            Case { dispatch, out: dk, want }
        }
        _ => return Ok(None),
    };
    Ok(Some(case))
}

/// A Dense op of `inputs` -> `units`; None when `entry` is not one of its ops.
fn dense_case(o: Ops<'_>, inputs_n: usize, units: usize, batch: usize, entry: &str) -> Result<Option<Case>> {
    use crate::cpu::dense as dn;
    let gpu = o.gpu;
    let i = inputs(gpu, batch * inputs_n, inputs_n * units, units, batch * units);
    let w = Weights { params: &i.pb, w_off: 0, b_off: i.k.len() };
    let case = match entry {
        "dense_forward" => {
            let y = gpu.zeros("y", batch * units);
            let want = dn::dense_forward(&i.x, &i.k, &i.b, inputs_n, crate::model::Activation::Linear);
            Case { dispatch: o.dense_forward(batch, inputs_n, units, &i.xb, w, false, &y)?, out: y, want }
        }
        "dense_backward_input" => {
            let dx = gpu.zeros("dx", batch * inputs_n);
            let want = dn::dense_backward_input(&i.dy, &i.k, inputs_n, units);
            Case { dispatch: o.dense_backward_input(batch, inputs_n, units, &i.dyb, w, &dx)?, out: dx, want }
        }
        "dense_backward_kernel" => {
            let dk = gpu.zeros("dk", inputs_n * units + units);
            let gw = Weights { params: &dk, w_off: 0, b_off: i.k.len() };
            let want = dn::dense_backward_kernel(&i.x, &i.dy, inputs_n, units);
            Case { dispatch: o.dense_backward_kernel(batch, inputs_n, units, &i.xb, &i.dyb, gw)?, out: dk, want }
        }
        _ => return Ok(None),
    };
    Ok(Some(case))
}

/// Time a case five times with timestamp queries, compare with the CPU, print one line.
fn check_and_time(gpu: &Gpu, kernels: &Kernels, variant: Variant, case: &Case) -> Result<()> {
    let d = &case.dispatch;
    let mut times = Vec::new();
    for _ in 0..5 {
        times.push(profile_checked(gpu, kernels, std::slice::from_ref(d))?.0[0]);
    }
    let mut got: Vec<f32> = gpu.read(&case.out)?;
    got.truncate(case.want.len());
    let (mut max_abs, mut max_rel) = (0.0f32, 0.0f32);
    for (g, w) in got.iter().zip(&case.want) {
        max_abs = max_abs.max((g - w).abs());
        if w.abs() > 1e-3 {
            max_rel = max_rel.max((g - w).abs() / w.abs());
        }
    }
    let t = Spread::of(times).median;
    println!(
        "  {:<10} {:<36} {:>9.3} ms {:>8.2} GFLOP/s   max abs err {:.2e}, max rel err {:.2e}",
        format!("{variant:?}").to_lowercase(),
        d.entry,
        t / 1e6,
        d.flops / t,
        max_abs,
        max_rel
    );
    // An op of several dispatches (packing, phases, partial sums): each one's time.
    let parts = d.split();
    if parts.len() > 1 {
        let mut each: Vec<Vec<f64>> = vec![Vec::new(); parts.len()];
        for _ in 0..5 {
            for (e, t) in each.iter_mut().zip(profile_checked(gpu, kernels, &parts)?.0) {
                e.push(t);
            }
        }
        for (p, e) in parts.iter().zip(each) {
            println!("  {:<10}   {:<34} {:>9.3} ms", "", p.entry, Spread::of(e).median / 1e6);
        }
    }
    Ok(())
}

fn layer_names(model: &Model) -> Vec<String> {
    let mut v = Vec::new();
    for (net, layers) in [("encoder", &model.encoder), ("decoder", &model.decoder)] {
        for l in layers.iter().filter(|l| l.kernel_param.is_some()) {
            v.push(format!("{net}.{}", l.name));
        }
    }
    v
}
