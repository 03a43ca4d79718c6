//! The shader files, their pipelines, and dispatches.
//!
//! One pipeline per entry point serves every layer of every preset: shapes and
//! offsets travel in a uniform at binding 0 (`p`, a struct of `uniforms.rs`).
//! Which other buffers an entry point uses, and under which names, is read from
//! the shader itself with naga: a launcher passes its buffers by binding *name*,
//! and a missing name, a name the entry point does not use, or a uniform of the
//! wrong struct is an error, not a crash or a silent swap.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};

use super::uniforms::Uniform;
use super::Gpu;

/// Every shader file with entry points, by name (`shaders/<name>.wgsl`).
pub const SHADER_FILES: [(&str, &str); 10] = [
    ("activation", include_str!("../../shaders/activation.wgsl")),
    ("blocked", include_str!("../../shaders/blocked.wgsl")),
    ("conv2d", include_str!("../../shaders/conv2d.wgsl")),
    ("conv2d_transpose", include_str!("../../shaders/conv2d_transpose.wgsl")),
    ("dense", include_str!("../../shaders/dense.wgsl")),
    ("gather", include_str!("../../shaders/gather.wgsl")),
    ("kl", include_str!("../../shaders/kl.wgsl")),
    ("loss", include_str!("../../shaders/loss.wgsl")),
    ("optim", include_str!("../../shaders/optim.wgsl")),
    ("reparam", include_str!("../../shaders/reparam.wgsl")),
];

/// Prepended to every file: the shared structs and helpers, and the RNG.
const PRELUDE: &str = include_str!("../../shaders/prelude.wgsl");
const RNG: &str = include_str!("../../shaders/rng.wgsl");

/// Invocations per workgroup of the 1-D kernels: the shaders' `WG`, defined here only.
pub const WORKGROUP: u32 = 64;
/// wgpu's default `max_compute_workgroups_per_dimension`.
pub const MAX_GROUPS_PER_DIM: u32 = 65535;

/// The WGSL source handed to the device for one file: `WG`, the prelude, the RNG, the file.
pub fn composed_source(name: &str) -> Option<String> {
    let (_, src) = SHADER_FILES.iter().find(|(n, _)| *n == name)?;
    Some(format!("const WG: u32 = {WORKGROUP}u;\n{PRELUDE}\n{RNG}\n{src}"))
}

/// Parse and validate one composed file with naga.
pub fn naga_module(name: &str) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
    let src = composed_source(name).ok_or_else(|| anyhow!("no shader file named {name}"))?;
    let module =
        naga::front::wgsl::parse_str(&src).map_err(|e| anyhow!("shaders/{name}.wgsl does not parse:\n{}", e.emit_to_string(&src)))?;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
        .validate(&module)
        .map_err(|e| anyhow!("shaders/{name}.wgsl does not validate:\n{}", e.emit_to_string(&src)))?;
    Ok((module, info))
}

pub struct Kernel {
    pub file: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// The buffers the entry point uses other than its uniform `p`: (name, binding).
    pub bindings: Vec<(String, u32)>,
    /// The WGSL struct of its uniform `p` at binding 0.
    pub uniform: String,
    /// Invocations per workgroup (x; every kernel's grid is 1-D).
    pub workgroup: u32,
}

/// What an entry point uses, read from naga's analysis: (name, binding) of every
/// resource but `p`, and the struct name of `p`.
fn reflect(module: &naga::Module, info: &naga::valid::ModuleInfo, index: usize) -> (Vec<(String, u32)>, String) {
    let uses = info.get_entry_point(index);
    let mut bindings = Vec::new();
    let mut uniform = String::new();
    for (h, var) in module.global_variables.iter() {
        let (Some(b), false) = (&var.binding, uses[h].is_empty()) else { continue };
        if b.binding == 0 {
            uniform = module.types[var.ty].name.clone().unwrap_or_default();
        } else {
            bindings.push((var.name.clone().unwrap_or_default(), b.binding));
        }
    }
    bindings.sort_by_key(|(_, b)| *b);
    (bindings, uniform)
}

pub struct Kernels {
    map: HashMap<String, Kernel>,
}

impl Kernels {
    /// Build a pipeline for every entry point of every shader file.
    pub fn new(gpu: &Gpu) -> Result<Kernels> {
        let mut map = HashMap::new();
        for (file, _) in SHADER_FILES {
            let (module, info) = naga_module(file)?;
            let src = composed_source(file).expect("listed file");
            let shader = gpu
                .device
                .create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(file), source: wgpu::ShaderSource::Wgsl(src.into()) });
            for (i, ep) in module.entry_points.iter().enumerate() {
                let (bindings, uniform) = reflect(&module, &info, i);
                let pipeline = gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(&ep.name),
                    layout: None,
                    module: &shader,
                    entry_point: Some(&ep.name),
                    compilation_options: Default::default(),
                    cache: None,
                });
                let layout = pipeline.get_bind_group_layout(0);
                let workgroup = ep.workgroup_size[0];
                map.insert(ep.name.clone(), Kernel { file, pipeline, layout, bindings, uniform, workgroup });
            }
        }
        Ok(Kernels { map })
    }

    pub fn get(&self, entry: &str) -> Result<&Kernel> {
        self.map.get(entry).ok_or_else(|| anyhow!("no shader entry point named {entry}"))
    }

    pub fn entry_points(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(|s| s.as_str())
    }

    /// A dispatch of `entry` over `threads` invocations.
    pub fn dispatch<U: Uniform>(
        &self,
        gpu: &Gpu,
        entry: &str,
        uniform: &U,
        buffers: &[(&str, &wgpu::Buffer)],
        threads: usize,
    ) -> Result<Dispatch> {
        let groups = threads.div_ceil(self.get(entry)?.workgroup as usize);
        self.dispatch_groups(gpu, entry, uniform, buffers, groups)
    }

    /// A dispatch of `entry` over `groups` workgroups (for one-workgroup-per-item kernels).
    /// `buffers` name every buffer the entry point uses: each name must be one of its
    /// bindings, and each of its bindings must be named.
    pub fn dispatch_groups<U: Uniform>(
        &self,
        gpu: &Gpu,
        entry: &str,
        uniform: &U,
        buffers: &[(&str, &wgpu::Buffer)],
        groups: usize,
    ) -> Result<Dispatch> {
        let k = self.get(entry)?;
        if k.uniform != U::WGSL {
            bail!("{entry} (shaders/{}.wgsl) takes a uniform {}, not {}", k.file, k.uniform, U::WGSL);
        }
        let names = || k.bindings.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
        if let Some((extra, _)) = buffers.iter().find(|(n, _)| !k.bindings.iter().any(|(b, _)| b == n)) {
            bail!("{entry} (shaders/{}.wgsl) has no buffer named {extra}; it binds {}", k.file, names());
        }
        let groups = u32::try_from(groups.max(1)).map_err(|_| anyhow!("{entry}: {groups} workgroups is too many"))?;
        let grid = if groups <= MAX_GROUPS_PER_DIM { [groups, 1, 1] } else { [MAX_GROUPS_PER_DIM, groups.div_ceil(MAX_GROUPS_PER_DIM), 1] };
        if grid[1] > MAX_GROUPS_PER_DIM {
            bail!("{entry}: {groups} workgroups exceed the device's {MAX_GROUPS_PER_DIM} x {MAX_GROUPS_PER_DIM} grid; use a smaller batch");
        }
        let ubuf = gpu.uniform(entry, uniform);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: ubuf.as_entire_binding() }];
        for (name, b) in &k.bindings {
            let buf = buffers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, buf)| *buf)
                .with_context(|| format!("{entry} (shaders/{}.wgsl) needs a buffer named {name}; it binds {}", k.file, names()))?;
            entries.push(wgpu::BindGroupEntry { binding: *b, resource: buf.as_entire_binding() });
        }
        let bind_group =
            gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(entry), layout: &k.layout, entries: &entries });
        Ok(Dispatch {
            entry: entry.to_string(),
            label: String::new(),
            flops: 0.0,
            parts: vec![Part { entry: entry.to_string(), bind_group, grid }],
            keep: vec![ubuf],
        })
    }

    /// Record dispatches into one compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>, dispatches: &[Dispatch]) -> Result<()> {
        for part in dispatches.iter().flat_map(|d| d.parts.iter()) {
            let k = self.get(&part.entry)?;
            pass.set_pipeline(&k.pipeline);
            pass.set_bind_group(0, &part.bind_group, &[]);
            pass.dispatch_workgroups(part.grid[0], part.grid[1], part.grid[2]);
        }
        Ok(())
    }

    /// One command buffer holding the dispatches in one compute pass.
    pub fn encode(&self, gpu: &Gpu, dispatches: &[Dispatch]) -> Result<wgpu::CommandBuffer> {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            self.record(&mut pass, dispatches)?;
        }
        Ok(enc.finish())
    }

    /// Record, submit and wait: for tests and one-off work, never inside the batch loop.
    pub fn run_now(&self, gpu: &Gpu, dispatches: &[Dispatch]) -> Result<()> {
        gpu.queue.submit([self.encode(gpu, dispatches)?]);
        gpu.wait()
    }
}

impl Dispatch {
    pub fn labeled(mut self, label: &str) -> Self {
        self.label = label.to_string();
        self
    }
    pub fn with_flops(mut self, flops: f64) -> Self {
        self.flops = flops;
        self
    }
    /// One op made of two dispatches run in order (e.g. partial sums, then their reduction).
    pub fn then(mut self, next: Dispatch) -> Self {
        self.parts.extend(next.parts);
        self.keep.extend(next.keep);
        self
    }
    /// Keep a scratch buffer alive as long as the dispatch.
    pub fn keeping(mut self, buf: wgpu::Buffer) -> Self {
        self.keep.push(buf);
        self
    }
}

/// Time each dispatch with timestamp queries: each in its own pass with a
/// beginning and end timestamp. Returns nanoseconds per dispatch. Needs
/// `Features::TIMESTAMP_QUERY`; None when the device lacks it.
pub fn profile(gpu: &Gpu, kernels: &Kernels, dispatches: &[Dispatch]) -> Result<Option<Vec<f64>>> {
    if !gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
        return Ok(None);
    }
    let mut times = Vec::with_capacity(dispatches.len());
    // wgpu caps a query set at 4096 queries: two per dispatch.
    for chunk in dispatches.chunks(2048) {
        let count = 2 * chunk.len() as u32;
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor { label: Some("profile"), ty: wgpu::QueryType::Timestamp, count });
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamps"),
            size: count as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        for (i, d) in chunk.iter().enumerate() {
            let tw = wgpu::ComputePassTimestampWrites {
                query_set: &set,
                beginning_of_pass_write_index: Some(2 * i as u32),
                end_of_pass_write_index: Some(2 * i as u32 + 1),
            };
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(&d.entry), timestamp_writes: Some(tw) });
            kernels.record(&mut pass, std::slice::from_ref(d))?;
        }
        enc.resolve_query_set(&set, 0..count, &resolve, 0);
        gpu.queue.submit([enc.finish()]);
        let ticks: Vec<u64> = gpu.read(&resolve)?;
        let period = gpu.queue.get_timestamp_period() as f64;
        times.extend(ticks.chunks(2).map(|t| t[1].saturating_sub(t[0]) as f64 * period));
    }
    Ok(Some(times))
}

/// One op, ready to record: its entry point (the first, if it takes several
/// dispatches), bind groups and grids.
pub struct Dispatch {
    pub entry: String,
    /// Which layer or stage it serves, for the benchmark's table.
    pub label: String,
    /// Floating-point operations it performs (true multiply-adds count 2), 0 where not counted.
    pub flops: f64,
    parts: Vec<Part>,
    keep: Vec<wgpu::Buffer>,
}

/// One compute dispatch of an op.
struct Part {
    entry: String,
    bind_group: wgpu::BindGroup,
    grid: [u32; 3],
}
