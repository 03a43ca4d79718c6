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
