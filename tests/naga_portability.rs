//! Every shader file parses, validates with no optional capability, stays within
//! wgpu's default limits, and translates to SPIR-V (Vulkan), MSL (Metal), HLSL
//! (DX12) and GLSL ES 3.1 (GL). Only Vulkan runs here; this is our guard for the rest.

use cvae::gpu::kernels::{naga_module, SHADER_FILES};
use naga::back::{glsl, hlsl, msl, spv};

#[test]
fn every_shader_translates_to_every_backend() {
    let defaults = wgpu::Limits::default();
    let mut entry_points = 0;
    for (name, _) in SHADER_FILES {
        let (module, info) = naga_module(name).unwrap_or_else(|e| panic!("{e:#}"));
        spv::write_vec(&module, &info, &spv::Options::default(), None).unwrap_or_else(|e| panic!("shaders/{name}.wgsl -> SPIR-V: {e}"));
        msl::write_string(&module, &info, &msl::Options::default(), &msl::PipelineOptions::default())
            .unwrap_or_else(|e| panic!("shaders/{name}.wgsl -> MSL: {e}"));
        let mut hlsl_out = String::new();
        hlsl::Writer::new(&mut hlsl_out, &hlsl::Options::default(), &hlsl::PipelineOptions::default())
            .write(&module, &info, None)
            .unwrap_or_else(|e| panic!("shaders/{name}.wgsl -> HLSL: {e}"));
        for ep in &module.entry_points {
            entry_points += 1;
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
