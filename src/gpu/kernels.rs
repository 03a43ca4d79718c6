//! The shader files, their pipelines, and dispatches.
//!
//! One pipeline per entry point serves every layer of every preset: shapes and
//! offsets travel in a uniform at binding 0 (`p`, a struct of `uniforms.rs`).
//! Which other buffers an entry point uses, and under which names, is read from
//! the shader itself with naga: a launcher passes its buffers by binding *name*,
//! and a missing name, a name the entry point does not use, or a uniform of the
//! wrong struct is an error, not a crash or a silent swap.

use std::collections::HashMap;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

use super::uniforms::Uniform;
use super::Gpu;

/// Every shader file with entry points, by name (`shaders/<name>.wgsl`).
pub const SHADER_FILES: [(&str, &str); 12] = [
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
    ("subgroup", include_str!("../../shaders/subgroup.wgsl")),
    ("tiled", include_str!("../../shaders/tiled.wgsl")),
];

/// Files whose kernels need `Features::SUBGROUP`: parsed and built only on a device that
/// has it (`Gpu` asks for it only where subgroups are 8 lanes wide).
pub const SUBGROUP_FILES: [&str; 1] = ["subgroup"];

/// Prepended to every file: the shared structs and helpers, and the RNG.
const PRELUDE: &str = include_str!("../../shaders/prelude.wgsl");
const RNG: &str = include_str!("../../shaders/rng.wgsl");

/// Invocations per workgroup of the 1-D kernels: the shaders' `WG`, defined here only.
pub const WORKGROUP: u32 = 64;
/// wgpu's default `max_compute_workgroups_per_dimension`.
pub const MAX_GROUPS_PER_DIM: u32 = 65535;

/// The WGSL source handed to the device for one file: `WG`, the prelude, the RNG, the
/// file, with its `//#unroll` blocks expanded.
pub fn composed_source(name: &str) -> Result<String> {
    let (_, src) = SHADER_FILES.iter().find(|(n, _)| *n == name).ok_or_else(|| anyhow!("no shader file named {name}"))?;
    let body = expand_unrolls(src).with_context(|| format!("shaders/{name}.wgsl"))?;
    Ok(format!("const WG: u32 = {WORKGROUP}u;\n{PRELUDE}\n{RNG}\n{body}"))
}

/// Expand `//#unroll NAME COUNT` ... `//#end` blocks: the lines between are written
/// COUNT times with `{NAME}` replaced by 0, 1, ... COUNT - 1 (and `{NAME+K}` by that
/// plus K). Kernels that broadcast across a subgroup need this: `subgroupBroadcast`
/// takes a constant lane, and WGSL has no loop unrolling of its own.
/// `//#forms A:B:TAG a1:b1:t1 a2:b2:t2 ...` ... `//#end` writes its block once per
/// form, `{A}` replaced by its a, `{B}` by its b and so on (one kernel in several
/// sizes, each an entry point of its own: `fn k{TAG}`); an `//#unroll` count may be
/// such a `{NAME}`. Blocks nest.
pub fn expand_unrolls(src: &str) -> Result<String> {
    let lines: Vec<&str> = src.lines().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < lines.len() {
        i = expand_from(&lines, i, &[], &mut out)?;
    }
    Ok(out)
}

/// `line` with the substitutions `subs` made.
fn substitute(line: &str, subs: &[(String, String)], at: usize) -> Result<String> {
    let mut l = line.to_string();
    for (name, v) in subs {
        l = l.replace(&format!("{{{name}}}"), v);
        // `{NAME+K}`: the value plus a constant (a sliding window's neighbours).
        let open = format!("{{{name}+");
        while let Some(pos) = l.find(&open) {
            let rest = &l[pos + open.len()..];
            let close = rest.find('}').ok_or_else(|| anyhow!("line {at}: unclosed {open}"))?;
            let bad = || anyhow!("line {at}: {open}{} is not NAME+number over a number", &rest[..close]);
            let k: usize = rest[..close].parse().map_err(|_| bad())?;
            let base: usize = v.parse().map_err(|_| bad())?;
            l = format!("{}{}{}", &l[..pos], base + k, &rest[close + 1..]);
        }
    }
    Ok(l)
}

/// Write line `i` (or the whole block it opens) with the substitutions `subs`;
/// returns the index of the next line to write.
fn expand_from(lines: &[&str], i: usize, subs: &[(String, String)], out: &mut String) -> Result<usize> {
    let line = substitute(lines[i], subs, i + 1)?;
    let trimmed = line.trim_start();
    // Each form of the block: the substitutions it adds.
    let forms: Vec<Vec<(String, String)>> = if let Some(rest) = trimmed.strip_prefix("//#unroll ") {
        let mut words = rest.split_whitespace();
        let (Some(name), Some(count)) = (words.next(), words.next().and_then(|c| c.parse::<usize>().ok())) else {
            bail!("line {}: expected //#unroll NAME COUNT", i + 1);
        };
        (0..count).map(|v| vec![(name.to_string(), v.to_string())]).collect()
    } else if let Some(rest) = trimmed.strip_prefix("//#forms ") {
        let mut words = rest.split_whitespace();
        let Some(names) = words.next().map(|w| w.split(':').collect::<Vec<_>>()) else {
            bail!("line {}: expected //#forms NAME:NAME... VALUE:VALUE... ...", i + 1);
        };
        words
            .map(|it| {
                let values: Vec<&str> = it.split(':').collect();
                if values.len() != names.len() {
                    bail!("line {}: form {it} has {} values for the {} names {}", i + 1, values.len(), names.len(), names.join(":"));
                }
                Ok(names.iter().zip(values).map(|(n, v)| (n.to_string(), v.to_string())).collect())
            })
            .collect::<Result<_>>()?
    } else {
        if trimmed.starts_with("//#end") {
            bail!("line {}: //#end without //#unroll", i + 1);
        }
        out.push_str(&line);
        out.push('\n');
        return Ok(i + 1);
    };
    // The block's end: the matching //#end at the same nesting depth.
    let opens = |t: &str| t.starts_with("//#unroll ") || t.starts_with("//#forms ");
    let mut depth = 0;
    let mut end = None;
    for (j, l) in lines.iter().enumerate().skip(i + 1) {
        let t = l.trim_start();
        if opens(t) {
            depth += 1;
        } else if t.starts_with("//#end") {
            if depth == 0 {
                end = Some(j);
                break;
            }
            depth -= 1;
        }
    }
    let end = end.ok_or_else(|| anyhow!("line {}: {} has no //#end", i + 1, trimmed))?;
    for form in forms {
        let mut inner = subs.to_vec();
        inner.extend(form);
        let mut j = i + 1;
        while j < end {
            j = expand_from(lines, j, &inner, out)?;
        }
    }
    Ok(end + 1)
}

/// Parse and validate one composed file with naga.
pub fn naga_module(name: &str) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
    let src = composed_source(name)?;
    let module =
        naga::front::wgsl::parse_str(&src).map_err(|e| anyhow!("shaders/{name}.wgsl does not parse:\n{}", e.emit_to_string(&src)))?;
    let caps = if SUBGROUP_FILES.contains(&name) { naga::valid::Capabilities::SUBGROUP } else { naga::valid::Capabilities::empty() };
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| anyhow!("shaders/{name}.wgsl does not validate:\n{}", e.emit_to_string(&src)))?;
    Ok((module, info))
}

/// The module a device gets for one entry point: the file's, with the other entry
/// points and whatever only they use removed (naga's `compact`).
pub fn entry_module(module: &naga::Module, entry: &str) -> naga::Module {
    let mut m = module.clone();
    m.entry_points.retain(|ep| ep.name == entry);
    naga::compact::compact(&mut m, naga::compact::KeepUnused::No);
    m
}

/// `f` of every item, on as many threads as the host has cores, each thread taking the
/// next item in order (so put the longest first); the results in the items' order.
fn on_every_core<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Result<Vec<R>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(item) = items.get(i) else { return done };
            done.push((i, f(item)));
        }
    };
    let mut all = std::thread::scope(|s| -> Result<Vec<(usize, R)>> {
        let others: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut all = work();
        for h in others {
            all.extend(h.join().map_err(|_| anyhow!("a worker thread panicked"))?);
        }
        Ok(all)
    })?;
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, r)| r).collect())
}

pub struct Kernel {
    pub file: &'static str,
    /// Its bind group layout, from the shader's declarations (`layout_entry`), so bind
    /// groups exist before the pipeline does.
    layout: wgpu::BindGroupLayout,
    /// The pipeline, built before the first recording of a dispatch that uses it, many
    /// at a time (`Kernels::build`): a run builds only what it uses, and on lavapipe a
    /// subgroup kernel takes 0.2-0.5 s to build even with a warm shader cache.
    built: OnceLock<wgpu::ComputePipeline>,
    /// How large the entry point's body is (naga expressions): the largest are built first.
    size: usize,
    /// The buffers the entry point uses other than its uniform `p`: (name, binding).
    pub bindings: Vec<(String, u32)>,
    /// The WGSL struct of its uniform `p` at binding 0.
    pub uniform: String,
    /// Invocations per workgroup (x; every kernel's grid is 1-D).
    pub workgroup: u32,
}

/// What an entry point uses, read from naga's analysis.
struct Reflected {
    /// (name, binding) of every resource but `p`.
    bindings: Vec<(String, u32)>,
    /// The struct name of `p`.
    uniform: String,
    /// The bind group layout entries of all its resources, `p` included.
    entries: Vec<wgpu::BindGroupLayoutEntry>,
}

fn reflect(module: &naga::Module, info: &naga::valid::ModuleInfo, index: usize) -> Result<Reflected> {
    let uses = info.get_entry_point(index);
    let mut bindings = Vec::new();
    let mut uniform = String::new();
    let mut entries = Vec::new();
    for (h, var) in module.global_variables.iter() {
        let (Some(b), false) = (&var.binding, uses[h].is_empty()) else { continue };
        entries.push(layout_entry(module, var, b.binding)?);
        if b.binding == 0 {
            uniform = module.types[var.ty].name.clone().unwrap_or_default();
        } else {
            bindings.push((var.name.clone().unwrap_or_default(), b.binding));
        }
    }
    bindings.sort_by_key(|(_, b)| *b);
    entries.sort_by_key(|e| e.binding);
    Ok(Reflected { bindings, uniform, entries })
}

/// The layout entry of one declared resource: what `layout: None` would derive, for
/// the kinds our shaders declare (a uniform, storage buffers, 2-D float textures read
/// with textureLoad, 2-D storage textures).
fn layout_entry(module: &naga::Module, var: &naga::GlobalVariable, binding: u32) -> Result<wgpu::BindGroupLayoutEntry> {
    let name = var.name.as_deref().unwrap_or("?");
    let ty = match (var.space, &module.types[var.ty].inner) {
        (naga::AddressSpace::Uniform, _) => {
            wgpu::BindingType::Buffer { ty: wgpu::BufferBindingType::Uniform, has_dynamic_offset: false, min_binding_size: None }
        }
        (naga::AddressSpace::Storage { access }, _) => wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only: !access.contains(naga::StorageAccess::STORE) },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        (
            naga::AddressSpace::Handle,
            naga::TypeInner::Image {
                dim: naga::ImageDimension::D2,
                arrayed: false,
                class: naga::ImageClass::Sampled { kind: naga::ScalarKind::Float, multi: false },
            },
        ) => wgpu::BindingType::Texture {
            sample_type: wgpu::TextureSampleType::Float { filterable: false },
            view_dimension: wgpu::TextureViewDimension::D2,
            multisampled: false,
        },
        (
            naga::AddressSpace::Handle,
            naga::TypeInner::Image { dim: naga::ImageDimension::D2, arrayed: false, class: naga::ImageClass::Storage { format, access } },
        ) => wgpu::BindingType::StorageTexture {
            access: if access.contains(naga::StorageAccess::LOAD) {
                wgpu::StorageTextureAccess::ReadWrite
            } else {
                wgpu::StorageTextureAccess::WriteOnly
            },
            format: match format {
                naga::StorageFormat::Rgba32Float => wgpu::TextureFormat::Rgba32Float,
                naga::StorageFormat::R32Float => wgpu::TextureFormat::R32Float,
                other => bail!("binding {binding} ({name}): storage texture format {other:?} is not one cvae lays out"),
            },
            view_dimension: wgpu::TextureViewDimension::D2,
        },
        (space, inner) => bail!("binding {binding} ({name}): {space:?} {inner:?} is not a kind of resource cvae lays out"),
    };
    Ok(wgpu::BindGroupLayoutEntry { binding, visibility: wgpu::ShaderStages::COMPUTE, ty, count: None })
}

/// A shader file as naga parsed and validated it.
struct File {
    module: naga::Module,
}

pub struct Kernels {
    files: HashMap<&'static str, File>,
    map: HashMap<String, Kernel>,
}

impl Kernels {
    /// Every entry point of every shader file the device can run, validated and
    /// reflected by naga, with their bind group layouts; pipelines are built before
    /// their first use (`build`).
    pub fn new(gpu: &Gpu) -> Result<Kernels> {
        let subgroups = gpu.features.contains(wgpu::Features::SUBGROUP);
        let mut todo: Vec<&'static str> =
            SHADER_FILES.iter().map(|(f, _)| *f).filter(|f| subgroups || !SUBGROUP_FILES.contains(f)).collect();
        // Parsing is most of a warm start's single-threaded part: files on every core, largest first.
        todo.sort_by_key(|f| std::cmp::Reverse(SHADER_FILES.iter().find(|(n, _)| n == f).map_or(0, |(_, src)| src.len())));
        let one = |file: &'static str| -> Result<(File, Vec<(String, Kernel)>)> {
            let (module, info) = naga_module(file)?;
            let mut kernels = Vec::new();
            for (i, ep) in module.entry_points.iter().enumerate() {
                let Reflected { bindings, uniform, entries } =
                    reflect(&module, &info, i).with_context(|| format!("{} (shaders/{file}.wgsl)", ep.name))?;
                let layout =
                    gpu.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&ep.name), entries: &entries });
                let workgroup = ep.workgroup_size[0];
                let size = ep.function.expressions.len();
                kernels.push((ep.name.clone(), Kernel { file, layout, built: OnceLock::new(), size, bindings, uniform, workgroup }));
            }
            Ok((File { module }, kernels))
        };
        let results = on_every_core(&todo, |&f| one(f)).context("checking the shaders")?;
        let mut results: Vec<_> = todo.iter().zip(results).collect();
        // The first error in file order, whichever thread met it first.
        results.sort_by_key(|(f, _)| SHADER_FILES.iter().position(|(n, _)| n == *f));
        let (mut files, mut map) = (HashMap::new(), HashMap::new());
        for (&f, r) in results {
            let (file, kernels) = r?;
            files.insert(f, file);
            map.extend(kernels);
        }
        Ok(Kernels { files, map })
    }

    pub fn get(&self, entry: &str) -> Result<&Kernel> {
        self.map.get(entry).ok_or_else(|| anyhow!("no shader entry point named {entry}"))
    }

    /// The pipeline of `entry`, built now if not yet.
    pub fn built(&self, gpu: &Gpu, entry: &str) -> Result<&wgpu::ComputePipeline> {
        let k = self.get(entry)?;
        let file = &self.files[k.file];
        Ok(k.built.get_or_init(|| {
            // A module of this entry point alone, from naga's IR: wgpu does not parse the
            // WGSL again, the driver reads only this kernel's SPIR-V, and no building
            // thread waits for another to finish a whole file's module (the subgroup
            // file's took 0.25 s, and its kernels are the ones built first).
            let source = wgpu::ShaderSource::Naga(std::borrow::Cow::Owned(entry_module(&file.module, entry)));
            let module = &gpu.device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(entry), source });
            let layout = gpu.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &[Some(&k.layout)],
                immediate_size: 0,
            });
            gpu.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&layout),
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        }))
    }

    /// Build the pipelines of `entries` not built yet, on as many threads as the host
    /// has cores, largest first: the driver's compiler front end (and, on drivers that
    /// compile at creation, all of it) runs in parallel. On lavapipe with warm caches
    /// this is most of a run's start-up.
    pub fn build(&self, gpu: &Gpu, entries: &[&str]) -> Result<()> {
        let mut todo: Vec<&str> = Vec::new();
        for &e in entries {
            if self.get(e)?.built.get().is_none() && !todo.contains(&e) {
                todo.push(e);
            }
        }
        // `record` asks at every step: with everything built, no threads, no checks.
        if todo.is_empty() {
            return Ok(());
        }
        todo.sort_by_key(|e| std::cmp::Reverse(self.map[*e].size));
        // Entries were looked up above; `built` cannot fail here.
        on_every_core(&todo, |e| {
            let _ = self.built(gpu, e);
        })
        .context("building pipelines")?;
        gpu.check()
    }

    /// Build every pipeline `dispatches` use (`build`).
    pub fn prepare<'d>(&self, gpu: &Gpu, dispatches: impl IntoIterator<Item = &'d Dispatch>) -> Result<()> {
        let entries: Vec<&str> =
            dispatches.into_iter().flat_map(|d| d.parts.iter().filter(|p| p.is_kernel()).map(|p| p.entry.as_str())).collect();
        self.build(gpu, &entries)
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
    pub fn dispatch_groups<U: Uniform>(
        &self,
        gpu: &Gpu,
        entry: &str,
        uniform: &U,
        buffers: &[(&str, &wgpu::Buffer)],
        groups: usize,
    ) -> Result<Dispatch> {
        let groups = u32::try_from(groups.max(1)).map_err(|_| anyhow!("{entry}: {groups} workgroups is too many"))?;
        let grid = if groups <= MAX_GROUPS_PER_DIM { [groups, 1, 1] } else { [MAX_GROUPS_PER_DIM, groups.div_ceil(MAX_GROUPS_PER_DIM), 1] };
        self.dispatch_grid(gpu, entry, uniform, buffers, &[], grid)
    }

    /// A dispatch of `entry` over a grid of workgroups, binding buffers and textures by
    /// name: each name must be one of the entry point's bindings, and each of its
    /// bindings must be named.
    pub fn dispatch_grid<U: Uniform>(
        &self,
        gpu: &Gpu,
        entry: &str,
        uniform: &U,
        buffers: &[(&str, &wgpu::Buffer)],
        textures: &[(&str, &wgpu::TextureView)],
        grid: [u32; 3],
    ) -> Result<Dispatch> {
        let k = self.get(entry)?;
        if k.uniform != U::WGSL {
            bail!("{entry} (shaders/{}.wgsl) takes a uniform {}, not {}", k.file, k.uniform, U::WGSL);
        }
        let names = || k.bindings.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
        let given = buffers.iter().map(|(n, _)| *n).chain(textures.iter().map(|(n, _)| *n));
        if let Some(extra) = given.clone().find(|n| !k.bindings.iter().any(|(b, _)| b == n)) {
            bail!("{entry} (shaders/{}.wgsl) has no binding named {extra}; it binds {}", k.file, names());
        }
        if grid.iter().any(|&g| g > MAX_GROUPS_PER_DIM) {
            bail!("{entry}: a grid of {grid:?} workgroups exceeds the device's {MAX_GROUPS_PER_DIM} per dimension; use a smaller batch");
        }
        let ubuf = gpu.uniform(entry, uniform);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: ubuf.as_entire_binding() }];
        let mut key = entry.to_string();
        for (name, b) in &k.bindings {
            let resource = if let Some((_, buf)) = buffers.iter().find(|(n, _)| n == name) {
                buf.as_entire_binding()
            } else if let Some((_, view)) = textures.iter().find(|(n, _)| n == name) {
                key.push_str(&format!(" {name}:{:?}", view.texture().format()));
                wgpu::BindingResource::TextureView(view)
            } else {
                bail!("{entry} (shaders/{}.wgsl) needs a binding named {name}; it binds {}", k.file, names());
            };
            entries.push(wgpu::BindGroupEntry { binding: *b, resource });
        }
        let bind_group =
            gpu.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(entry), layout: &k.layout, entries: &entries });
        Ok(Dispatch {
            entry: entry.to_string(),
            label: String::new(),
            flops: 0.0,
            parts: vec![Part { entry: entry.to_string(), key, work: Work::Kernel { bind_group, grid } }],
            keep: vec![ubuf],
            keep_textures: Vec::new(),
        })
    }

    /// Record dispatches in order, building the pipelines they use first if need be
    /// (`prepare`): each run of kernels in one compute pass, a copy between passes.
    pub fn record(&self, gpu: &Gpu, enc: &mut wgpu::CommandEncoder, dispatches: &[Dispatch]) -> Result<()> {
        self.record_timed(gpu, enc, dispatches, None)
    }

    /// `record`, with timestamps `stamps` = (set, i): query i where the first pass
    /// begins and i + 1 where the last one ends (an empty pass if there are only copies).
    fn record_timed(
        &self,
        gpu: &Gpu,
        enc: &mut wgpu::CommandEncoder,
        dispatches: &[Dispatch],
        stamps: Option<(&wgpu::QuerySet, u32)>,
    ) -> Result<()> {
        self.prepare(gpu, dispatches)?;
        let parts: Vec<&Part> = dispatches.iter().flat_map(|d| d.parts.iter()).collect();
        let first = parts.iter().position(|p| p.is_kernel());
        let last = parts.iter().rposition(|p| p.is_kernel());
        if first.is_none() {
            if let Some((set, q)) = stamps {
                let tw = wgpu::ComputePassTimestampWrites {
                    query_set: set,
                    beginning_of_pass_write_index: Some(q),
                    end_of_pass_write_index: Some(q + 1),
                };
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(tw) });
            }
        }
        let mut i = 0;
        while i < parts.len() {
            if let Work::Copy(c) = &parts[i].work {
                c.record(enc);
                i += 1;
                continue;
            }
            let end = (i..parts.len()).find(|&j| !parts[j].is_kernel()).unwrap_or(parts.len());
            let tw = stamps.map(|(set, q)| wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: (Some(i) == first).then_some(q),
                end_of_pass_write_index: (Some(end - 1) == last).then_some(q + 1),
            });
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: tw });
            for part in &parts[i..end] {
                if let Work::Kernel { bind_group, grid } = &part.work {
                    pass.set_pipeline(self.built(gpu, &part.entry)?);
                    pass.set_bind_group(0, bind_group, &[]);
                    pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
                }
            }
            i = end;
        }
        Ok(())
    }

    /// A copy of the first `texels` texels' bytes of `buffer` into `texture`, row after
    /// row of `width` texels: how an activation reaches the texture the subgroup kernels
    /// read (lavapipe copies 10 MB in 0.3 ms, where a kernel storing the texels took 11).
    pub fn copy_to_texture(&self, buffer: &wgpu::Buffer, texture: &wgpu::Texture, texels: usize, width: usize) -> Result<Dispatch> {
        let bytes = texture.format().block_copy_size(None).ok_or_else(|| anyhow!("{:?} has no texel size", texture.format()))?;
        let copy = TexCopy {
            buffer: buffer.clone(),
            texture: texture.clone(),
            texels: u32::try_from(texels)?,
            width: u32::try_from(width)?,
            bytes,
        };
        Ok(Dispatch {
            entry: "copy_buffer_to_texture".to_string(),
            label: String::new(),
            flops: 0.0,
            parts: vec![Part { entry: "copy_buffer_to_texture".to_string(), key: String::new(), work: Work::Copy(copy) }],
            keep: Vec::new(),
            keep_textures: Vec::new(),
        })
    }

    /// One command buffer holding the dispatches.
    pub fn encode(&self, gpu: &Gpu, dispatches: &[Dispatch]) -> Result<wgpu::CommandBuffer> {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        self.record(gpu, &mut enc, dispatches)?;
        Ok(enc.finish())
    }

    /// Run each distinct kernel of `dispatches` once, largest first, so that a driver
    /// that compiles at the first dispatch (lavapipe) has done so before anything is
    /// timed. lavapipe compiles on the thread of the queue that runs the kernel, one at
    /// a time, so with a `helper` (a second device on the same adapter: `Gpu::sibling`,
    /// its `Kernels`, and the same dispatches built there) two threads share the
    /// compiling. The helper's machine code reaches this device through Mesa's shader
    /// cache on disk, loaded here by running those kernels once more (without that
    /// cache they are compiled again: slower, still correct).
    pub fn warm(&self, gpu: &Gpu, dispatches: &[Dispatch], helper: Option<(&Gpu, &Kernels, &[Dispatch])>) -> Result<()> {
        // Copies compile nothing.
        let kernels_of =
            |d: &[Dispatch]| -> Vec<Dispatch> { d.iter().flat_map(Dispatch::split).filter(|d| d.parts[0].is_kernel()).collect() };
        let mine = kernels_of(dispatches);
        let mut seen = std::collections::HashSet::new();
        let mut todo: Vec<usize> = (0..mine.len()).filter(|&i| seen.insert(mine[i].parts[0].key.clone())).collect();
        todo.sort_by_key(|&i| std::cmp::Reverse(self.map[&mine[i].entry].size));
        self.prepare(gpu, dispatches)?;
        let theirs: Vec<Dispatch> = helper.map(|(_, _, d)| kernels_of(d)).unwrap_or_default();
        let same = theirs.len() == mine.len() && theirs.iter().zip(&mine).all(|(a, b)| a.parts[0].key == b.parts[0].key);
        let helper = match helper {
            Some((hg, hk, _)) if same => (hg, hk),
            Some(_) => bail!("Kernels::warm: the helper's dispatches are not the same kernels as this device's"),
            None => {
                for &i in &todo {
                    self.run_now(gpu, std::slice::from_ref(&mine[i]))?;
                }
                return Ok(());
            }
        };
        let next = std::sync::atomic::AtomicUsize::new(0);
        let claim = || todo.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)).copied();
        let by_helper = std::thread::scope(|s| -> Result<Vec<usize>> {
            let other = s.spawn(|| -> Result<Vec<usize>> {
                let (hg, hk) = helper;
                let mut done = Vec::new();
                while let Some(i) = claim() {
                    hk.run_now(hg, std::slice::from_ref(&theirs[i]))?;
                    done.push(i);
                }
                Ok(done)
            });
            while let Some(i) = claim() {
                self.run_now(gpu, std::slice::from_ref(&mine[i]))?;
            }
            other.join().map_err(|_| anyhow!("the helper device's warm-up thread panicked"))?
        })?;
        for i in by_helper {
            self.run_now(gpu, std::slice::from_ref(&mine[i]))?;
        }
        Ok(())
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
        self.keep_textures.extend(next.keep_textures);
        self
    }
    /// This op, preceded by `first` (e.g. packing the weights it reads).
    pub fn after(mut self, first: Dispatch) -> Self {
        let mut parts = first.parts;
        parts.append(&mut self.parts);
        self.parts = parts;
        self.keep.extend(first.keep);
        self.keep_textures.extend(first.keep_textures);
        self
    }
    /// Report this op under another entry point's name (the one doing the work).
    pub fn named(mut self, entry: &str) -> Self {
        self.entry = entry.to_string();
        self
    }
    /// Each dispatch of this op as an op of its own, named by its entry point (to time
    /// them one by one); each keeps everything the op keeps.
    pub fn split(&self) -> Vec<Dispatch> {
        let part = |p: &Part| Dispatch {
            entry: p.entry.clone(),
            label: self.label.clone(),
            flops: 0.0,
            parts: vec![p.clone()],
            keep: self.keep.clone(),
            keep_textures: self.keep_textures.clone(),
        };
        self.parts.iter().map(part).collect()
    }
    /// Keep a scratch buffer alive as long as the dispatch.
    pub fn keeping(mut self, buf: wgpu::Buffer) -> Self {
        self.keep.push(buf);
        self
    }
    /// Keep a texture alive as long as the dispatch.
    pub fn keeping_texture(mut self, tex: wgpu::Texture) -> Self {
        self.keep_textures.push(tex);
        self
    }
}

/// Nanoseconds of one dispatch by the wall clock: submitted alone and waited for,
/// less `baseline_ns` (what an empty submission costs; `submit_overhead_ns`).
pub fn wall_time_ns(gpu: &Gpu, kernels: &Kernels, d: &Dispatch, baseline_ns: f64) -> Result<f64> {
    let cmd = kernels.encode(gpu, std::slice::from_ref(d))?;
    let t0 = std::time::Instant::now();
    gpu.queue.submit([cmd]);
    gpu.wait()?;
    Ok((t0.elapsed().as_secs_f64() * 1e9 - baseline_ns).max(0.0))
}

/// What submitting an empty command buffer and waiting for it costs (median of 5).
pub fn submit_overhead_ns(gpu: &Gpu) -> Result<f64> {
    let mut v = Vec::new();
    for _ in 0..5 {
        let cmd = gpu.device.create_command_encoder(&Default::default()).finish();
        let t0 = std::time::Instant::now();
        gpu.queue.submit([cmd]);
        gpu.wait()?;
        v.push(t0.elapsed().as_secs_f64() * 1e9);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[2])
}

/// Time each dispatch with timestamp queries: a timestamp where its first pass
/// begins and one where its last ends (copies before its first kernel are not
/// covered). Returns nanoseconds per dispatch. Needs `Features::TIMESTAMP_QUERY`;
/// None when the device lacks it.
///
/// Mesa 22.3's lavapipe stops covering the work with its timestamps once a kernel
/// that writes a storage texture has run (a 70 ms dispatch then reads 0.05 ms), so
/// callers that need trustworthy figures check the total against the wall clock
/// (`profile_checked`).
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
            kernels.record_timed(gpu, &mut enc, std::slice::from_ref(d), Some((&set, 2 * i as u32)))?;
        }
        enc.resolve_query_set(&set, 0..count, &resolve, 0);
        gpu.queue.submit([enc.finish()]);
        let ticks: Vec<u64> = gpu.read(&resolve)?;
        let period = gpu.queue.get_timestamp_period() as f64;
        times.extend(ticks.chunks(2).map(|t| t[1].saturating_sub(t[0]) as f64 * period));
    }
    Ok(Some(times))
}

/// Nanoseconds per dispatch and how they were measured: by timestamp queries when the
/// adapter has them and they agree with the wall clock dispatch by dispatch (within a
/// quarter, or half a millisecond), else by the wall clock (`wall_time_ns`), which is
/// always measured too.
pub fn profile_checked(gpu: &Gpu, kernels: &Kernels, dispatches: &[Dispatch]) -> Result<(Vec<f64>, &'static str)> {
    let stamps = profile(gpu, kernels, dispatches)?;
    let base = submit_overhead_ns(gpu)?;
    let wall = dispatches.iter().map(|d| wall_time_ns(gpu, kernels, d, base)).collect::<Result<Vec<_>>>()?;
    match stamps {
        Some(t) if t.iter().zip(&wall).all(|(s, w)| (s - w).abs() <= (0.25 * w).max(0.5e6)) => Ok((t, "timestamp queries")),
        Some(_) => Ok((wall, "the wall clock, dispatch by dispatch (this adapter's timestamps disagreed with it)")),
        None => Ok((wall, "the wall clock, dispatch by dispatch (no timestamp queries)")),
    }
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
    keep_textures: Vec<wgpu::Texture>,
}

/// One compute dispatch of an op, or a copy into a texture.
#[derive(Clone)]
struct Part {
    entry: String,
    /// What llvmpipe compiles one version of machine code for: the entry point and
    /// the formats of the textures it binds (`Kernels::warm`).
    key: String,
    work: Work,
}

#[derive(Clone)]
enum Work {
    Kernel { bind_group: wgpu::BindGroup, grid: [u32; 3] },
    Copy(TexCopy),
}

impl Part {
    fn is_kernel(&self) -> bool {
        matches!(self.work, Work::Kernel { .. })
    }
}

/// `texels` texels from the start of `buffer` into `texture`, `width` a texture row.
#[derive(Clone)]
struct TexCopy {
    buffer: wgpu::Buffer,
    texture: wgpu::Texture,
    texels: u32,
    width: u32,
    /// Bytes a texel.
    bytes: u32,
}

impl TexCopy {
    /// The whole rows, then what is left of the last one.
    fn record(&self, enc: &mut wgpu::CommandEncoder) {
        let rows = self.texels / self.width;
        let rest = self.texels % self.width;
        let row_bytes = self.width * self.bytes;
        for (y, width, height) in [(0, self.width, rows), (rows, rest, 1)] {
            if width == 0 || height == 0 {
                continue;
            }
            let layout =
                wgpu::TexelCopyBufferLayout { offset: (y * row_bytes) as u64, bytes_per_row: Some(row_bytes), rows_per_image: None };
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo { buffer: &self.buffer, layout },
                wgpu::TexelCopyTextureInfo {
                    texture: &self.texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d { x: 0, y, z: 0 },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unroll_blocks_expand_and_nest() {
        let src = "a\n  //#unroll I 2\n  x{I}\n  //#unroll J 2\n  y{I}{J}\n  //#end\n  //#end\nb\n";
        assert_eq!(super::expand_unrolls(src).unwrap(), "a\n  x0\n  y00\n  y01\n  x1\n  y10\n  y11\nb\n");
        assert_eq!(super::expand_unrolls("//#unroll I 2\nv{I+2} + v{I}\n//#end\n").unwrap(), "v2 + v0\nv3 + v1\n");
        assert!(super::expand_unrolls("//#unroll I 2\nv{I+x}\n//#end\n").is_err(), "an offset is a number");
        let forms = "//#forms W:S 1: 2:_wide\nfn k{S}() {\n//#unroll V {W}\n  a{V}\n//#end\n}\n//#end\n";
        assert_eq!(super::expand_unrolls(forms).unwrap(), "fn k() {\n  a0\n}\nfn k_wide() {\n  a0\n  a1\n}\n");
        let three = "//#forms W:R:S 1:2: 2:1:_wide\nfn k{S}() {\n//#unroll I {R}\n  r{I} w{W}\n//#end\n}\n//#end\n";
        assert_eq!(super::expand_unrolls(three).unwrap(), "fn k() {\n  r0 w1\n  r1 w1\n}\nfn k_wide() {\n  r0 w2\n}\n");
        assert!(super::expand_unrolls("//#forms W:S 1\nx\n//#end\n").is_err(), "a form gives every name a value");
        assert!(super::expand_unrolls("//#unroll I 2\nx\n").is_err(), "an open block is an error");
        assert!(super::expand_unrolls("x\n//#end\n").is_err(), "a stray end is an error");
    }
}
