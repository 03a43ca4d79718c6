//! Every shader file parses, validates with no optional capability (the subgroup
//! kernels with subgroups only), stays within wgpu's default limits, and translates to
//! SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL ES 3.1 (GL; not the subgroup
//! kernels: wgpu's GL backend has no subgroups). Only Vulkan runs here; this is our
//! guard for the rest.

use cvae::gpu::kernels::{entry_module, naga_module, SHADER_FILES, SUBGROUP_FILES};
use naga::back::{glsl, hlsl, msl, spv};

/// Write `module` as SPIR-V (Vulkan), MSL (Metal) and HLSL (DX12), or fail naming `what`.
fn to_spirv_msl_hlsl(module: &naga::Module, info: &naga::valid::ModuleInfo, what: &str) {
    spv::write_vec(module, info, &spv::Options::default(), None).unwrap_or_else(|e| panic!("{what} -> SPIR-V: {e}"));
    msl::write_string(module, info, &msl::Options::default(), &msl::PipelineOptions::default())
        .unwrap_or_else(|e| panic!("{what} -> MSL: {e}"));
    let mut out = String::new();
    hlsl::Writer::new(&mut out, &hlsl::Options::default(), &hlsl::PipelineOptions::default())
        .write(module, info, None)
        .unwrap_or_else(|e| panic!("{what} -> HLSL: {e}"));
}

#[test]
fn every_shader_translates_to_every_backend() {
    let defaults = wgpu::Limits::default();
    let mut entry_points = 0;
    for (name, _) in SHADER_FILES {
        let (module, info) = naga_module(name).unwrap_or_else(|e| panic!("{e:#}"));
        to_spirv_msl_hlsl(&module, &info, &format!("shaders/{name}.wgsl"));
        for ep in &module.entry_points {
            entry_points += 1;
            // wgpu's GL backend offers no subgroups, so those kernels never meet GLSL.
            if SUBGROUP_FILES.contains(&name) {
                continue;
            }
            let [x, y, z] = ep.workgroup_size;
            assert!(
                x * y * z <= defaults.max_compute_invocations_per_workgroup,
                "{}: workgroup {x}x{y}x{z} is over the default limit",
                ep.name
            );
            let opts = glsl::Options::default();
            let popts = glsl::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: ep.name.clone(), multiview: None };
            let mut out = String::new();
            glsl::Writer::new(&mut out, &module, &info, &opts, &popts, naga::proc::BoundsCheckPolicies::default())
                .and_then(|mut w| w.write())
                .unwrap_or_else(|e| panic!("shaders/{name}.wgsl entry point {} -> GLSL ES 3.1: {e}", ep.name));
        }
        // Workgroup memory stays under the default 16 KiB.
        let shared: u32 = module
            .global_variables
            .iter()
            .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
            .map(|(_, v)| module.types[v.ty].inner.size(module.to_ctx()))
            .sum();
        assert!(shared <= defaults.max_compute_workgroup_storage_size, "shaders/{name}.wgsl uses {shared} bytes of workgroup memory");
    }
    assert!(entry_points >= 20, "only {entry_points} entry points found");
}

/// What a device is handed is one entry point's module (`entry_module`): each of them
/// validates on its own and translates to SPIR-V, MSL and HLSL, keeping its bindings.
#[test]
fn every_entry_point_module_stands_alone() {
    for (name, _) in SHADER_FILES {
        let (module, _) = naga_module(name).unwrap_or_else(|e| panic!("{e:#}"));
        let caps = if SUBGROUP_FILES.contains(&name) { naga::valid::Capabilities::SUBGROUP } else { naga::valid::Capabilities::empty() };
        for ep in &module.entry_points {
            let m = entry_module(&module, &ep.name);
            let what = format!("shaders/{name}.wgsl entry point {} alone", ep.name);
            assert_eq!(m.entry_points.len(), 1, "{what}");
            let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                .validate(&m)
                .unwrap_or_else(|e| panic!("{what} does not validate: {e:?}"));
            let bindings = |m: &naga::Module| -> Vec<u32> {
                let mut b: Vec<u32> = m.global_variables.iter().filter_map(|(_, v)| v.binding.as_ref().map(|b| b.binding)).collect();
                b.sort();
                b
            };
            // Every binding the entry point keeps is one the whole file declares.
            assert!(bindings(&m).iter().all(|b| bindings(&module).contains(b)), "{what}: bindings changed");
            to_spirv_msl_hlsl(&m, &info, &what);
        }
    }
}

/// Every uniform struct a shader binds has a twin in `src/gpu/uniforms.rs` with the
/// same member names, offsets and size as naga lays them out; every Rust twin is bound
/// somewhere. A field added on one side only, or reordered, fails here.
#[test]
fn uniform_structs_match_their_wgsl_twins() {
    let layouts = cvae::gpu::uniforms::layouts();
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in SHADER_FILES {
        let (module, _) = naga_module(name).unwrap_or_else(|e| panic!("{e:#}"));
        for (_, var) in module.global_variables.iter().filter(|(_, v)| v.space == naga::AddressSpace::Uniform) {
            let ty = &module.types[var.ty];
            let tname = ty.name.clone().unwrap_or_default();
            let naga::TypeInner::Struct { members, span } = &ty.inner else {
                panic!("shaders/{name}.wgsl: uniform {tname} is not a struct")
            };
            let rust = layouts
                .iter()
                .find(|l| l.wgsl == tname)
                .unwrap_or_else(|| panic!("shaders/{name}.wgsl binds uniform struct {tname}, which has no twin in src/gpu/uniforms.rs"));
            let wgsl: Vec<(String, usize)> = members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize)).collect();
            let rs: Vec<(String, usize)> = rust.fields.iter().map(|&(n, o)| (n.to_string(), o)).collect();
            assert_eq!(rs, wgsl, "struct {tname}: Rust fields (left) and naga's members of shaders/{name}.wgsl (right) differ");
            assert_eq!(rust.size, *span as usize, "struct {tname}: Rust size vs WGSL size in shaders/{name}.wgsl");
            seen.insert(tname);
        }
    }
    for l in &layouts {
        assert!(seen.contains(l.wgsl), "uniform struct {} of src/gpu/uniforms.rs is bound by no shader", l.wgsl);
    }
}

/// The 1-D kernels take their workgroup size from `WG`, which src/gpu/kernels.rs
/// defines; the GEMM families have their own shapes (4 subgroups of 8; 16 x 16). The
/// thin input gradient's lanes work alone, over a 1-D grid.
#[test]
fn workgroup_sizes_come_from_one_place() {
    for (name, _) in SHADER_FILES {
        let (module, _) = naga_module(name).unwrap_or_else(|e| panic!("{e:#}"));
        for ep in &module.entry_points {
            let want = match (name, ep.name.as_str()) {
                ("subgroup", "conv2d_backward_input_thin") => [cvae::gpu::kernels::WORKGROUP, 1, 1],
                ("subgroup", e) if ["_subgroup", "_wide", "_any", "_narrow", "_thin"].iter().any(|s| e.ends_with(s)) => [32, 1, 1],
                ("tiled", _) => [16, 16, 1],
                _ => [cvae::gpu::kernels::WORKGROUP, 1, 1],
            };
            assert_eq!(ep.workgroup_size, want, "{} in shaders/{name}.wgsl", ep.name);
        }
    }
}

/// The SPIR-V options wgpu's Vulkan backend uses on a Vulkan 1.3 device: SPIR-V 1.6,
/// indices and buffer and image accesses clamped (`Restrict`, for drivers without
/// robust access).
fn vulkan_options() -> spv::Options<'static> {
    let restrict = naga::proc::BoundsCheckPolicy::Restrict;
    spv::Options {
        lang_version: (1, 6),
        // Names in the report; types and decorations are the same without it.
        flags: spv::WriterFlags::DEBUG,
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: restrict,
            buffer: restrict,
            image_load: restrict,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        ..Default::default()
    }
}

/// The variables of SPIR-V `words` whose storage class forbids explicit layout
/// (Function, Private) but whose type carries one (an Offset, ArrayStride or
/// MatrixStride decoration, on the type or anything inside it): Vulkan's
/// VUID-StandaloneSpirv-None-10684, which the Khronos validation layer reports and
/// wgpu's own debug messenger hides. Each as "storage class: type description".
fn explicit_layout_in_function_variables(words: &[u32]) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    // Opcodes, decorations and storage classes, from the SPIR-V specification.
    const OP_NAME: u32 = 5;
    const OP_TYPE_ARRAY: u32 = 28;
    const OP_TYPE_RUNTIME_ARRAY: u32 = 29;
    const OP_TYPE_STRUCT: u32 = 30;
    const OP_TYPE_POINTER: u32 = 32;
    const OP_VARIABLE: u32 = 59;
    const OP_DECORATE: u32 = 71;
    const OP_MEMBER_DECORATE: u32 = 72;
    const LAYOUT: [u32; 3] = [35, 6, 7]; // Offset, ArrayStride, MatrixStride
    const PRIVATE: u32 = 6;
    const FUNCTION: u32 = 7;
    let (mut laid_out, mut inner, mut pointee, mut names) =
        (HashSet::new(), HashMap::<u32, Vec<u32>>::new(), HashMap::new(), HashMap::new());
    let mut vars = Vec::new();
    let mut i = 5;
    while i < words.len() {
        let (count, op) = ((words[i] >> 16) as usize, words[i] & 0xffff);
        let w = &words[i + 1..i + count.max(1)];
        match op {
            OP_NAME => {
                let bytes: Vec<u8> = w[1..].iter().flat_map(|x| x.to_le_bytes()).take_while(|&b| b != 0).collect();
                names.insert(w[0], String::from_utf8_lossy(&bytes).into_owned());
            }
            OP_DECORATE if LAYOUT.contains(&w[1]) => {
                laid_out.insert(w[0]);
            }
            OP_MEMBER_DECORATE if LAYOUT.contains(&w[2]) => {
                laid_out.insert(w[0]);
            }
            OP_TYPE_ARRAY | OP_TYPE_RUNTIME_ARRAY => {
                inner.insert(w[0], vec![w[1]]);
            }
            OP_TYPE_STRUCT => {
                inner.insert(w[0], w[1..].to_vec());
            }
            OP_TYPE_POINTER => {
                pointee.insert(w[0], (w[1], w[2]));
            }
            OP_VARIABLE => vars.push((w[0], w[2])),
            _ => {}
        }
        i += count.max(1);
    }
    fn has_layout(t: u32, laid_out: &HashSet<u32>, inner: &HashMap<u32, Vec<u32>>) -> bool {
        laid_out.contains(&t) || inner.get(&t).is_some_and(|ts| ts.iter().any(|&m| has_layout(m, laid_out, inner)))
    }
    vars.iter()
        .filter(|&&(_, class)| class == FUNCTION || class == PRIVATE)
        .filter_map(|&(ptr, class)| {
            let &(_, ty) = pointee.get(&ptr)?;
            has_layout(ty, &laid_out, &inner).then(|| {
                let what = names.get(&ty).cloned().unwrap_or_else(|| format!("type %{ty}"));
                format!("{} variable of {what}", if class == FUNCTION { "Function" } else { "Private" })
            })
        })
        .collect()
}

/// No entry point's SPIR-V gives a function-local variable a type with explicit layout
/// (a uniform struct copied into a `var`, or a value naga spills to index it): the
/// Vulkan spec forbids it, drivers tolerate it today and a stricter one may not.
#[test]
fn no_function_variable_has_an_explicit_layout() {
    let mut bad = Vec::new();
    for (name, _) in SHADER_FILES {
        let (module, _) = naga_module(name).unwrap_or_else(|e| panic!("{e:#}"));
        let caps = if SUBGROUP_FILES.contains(&name) { naga::valid::Capabilities::SUBGROUP } else { naga::valid::Capabilities::empty() };
        for ep in &module.entry_points {
            let m = entry_module(&module, &ep.name);
            let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps).validate(&m).unwrap();
            let words = spv::write_vec(&m, &info, &vulkan_options(), None).unwrap_or_else(|e| panic!("{} -> SPIR-V: {e}", ep.name));
            for v in explicit_layout_in_function_variables(&words) {
                bad.push(format!("shaders/{name}.wgsl {}: {v}", ep.name));
            }
        }
    }
    assert!(bad.is_empty(), "{} entry points break VUID-StandaloneSpirv-None-10684:\n{}", bad.len(), bad.join("\n"));
}

/// The check above sees what it looks for: with today's naga, a function-local `var` of
/// a struct or of a fixed-size array carries explicit layout (naga decorates every
/// struct with offsets and every array with a stride), a matrix does not. If a naga
/// update stops decorating them, this fails and the workarounds in `tiled.wgsl`
/// (`mat4x4` accumulators) and `subgroup.wgsl` (`KernelRows` by constructor) can go.
#[test]
fn the_layout_check_sees_structs_and_arrays_in_function_variables() {
    let wgsl = |body: &str| {
        let src = format!(
            "struct S {{ a: vec4<f32>, b: u32 }}
             @group(0) @binding(0) var<storage, read_write> out: array<f32>;
             @compute @workgroup_size(1) fn main(@builtin(local_invocation_index) i: u32) {{ {body} }}"
        );
        let m = naga::front::wgsl::parse_str(&src).unwrap();
        let info =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty()).validate(&m).unwrap();
        explicit_layout_in_function_variables(&spv::write_vec(&m, &info, &vulkan_options(), None).unwrap())
    };
    assert_eq!(wgsl("var s: S; s.b = i; out[0] = s.a.x + f32(s.b);"), ["Function variable of S"]);
    assert_eq!(wgsl("var a: array<vec4<f32>, 4>; a[i % 4u].x = 1.0; out[0] = a[0].x;").len(), 1);
    assert!(wgsl("var m: mat4x4<f32>; m[i % 4u].x = 1.0; out[0] = m[0].x;").is_empty());
    assert!(wgsl("let s = S(vec4<f32>(1.0), i); out[0] = s.a.x + f32(s.b);").is_empty());
}
