//! A wgpu device opens on each driver the tests use, the validation layer watches it,
//! and `--adapter` finds adapters by backend, number or name. These tests fail (never
//! skip) when a driver is missing, saying how to get it.

#[macro_use]
mod common;

use cvae::gpu::device::{self, AdapterChoice};
use cvae::gpu::kernels::Kernels;

fn a_device_opens_and_round_trips() {
    let gpu = common::driver().open();
    // A round trip through the device: write, copy, read back.
    let data: Vec<u32> = (0..64).collect();
    let src = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 256,
        usage: wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let dst = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 256,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    gpu.queue.write_buffer(&src, 0, bytemuck::cast_slice(&data));
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(&src, 0, &dst, 0, 256);
    gpu.queue.submit([enc.finish()]);
    dst.slice(..).map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    gpu.device.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
    let view = dst.slice(..).get_mapped_range().expect("mapped");
    let back: Vec<u32> = bytemuck::cast_slice(&view).to_vec();
    assert_eq!(back, data);
}

/// The layer is on and its log is read: a kernel with an array in workgroup memory draws
/// the one message the tests tolerate (naga's ArrayStride there, gfx-rs/wgpu#7696).
/// Without the layer, or with its log lost, this fails.
fn the_validation_layer_watches_the_device() {
    let gpu = common::driver().open();
    let kernels = Kernels::new(&gpu).unwrap_or_else(|e| panic!("{e:#}"));
    let before = common::tolerated_messages();
    kernels.build(&gpu, &["conv2d_forward_tiled"]).unwrap_or_else(|e| panic!("{e:#}"));
    let after = common::tolerated_messages();
    // Fresh pipelines of this test's own device: the layer reports this build, now.
    assert!(after > before, "the Khronos validation layer reported nothing for a workgroup array: is it on?");
}

on_every_driver!(a_device_opens_and_round_trips, the_validation_layer_watches_the_device);

#[test]
fn adapter_is_a_backend_a_number_or_part_of_a_name() {
    let parse = |s: &str| s.parse::<AdapterChoice>();
    assert_eq!(parse("auto"), Ok(AdapterChoice::Auto));
    assert_eq!(parse("Vulkan"), Ok(AdapterChoice::Vulkan));
    assert_eq!(parse("1"), Ok(AdapterChoice::Index(1)));
    assert_eq!(parse("rtx"), Ok(AdapterChoice::Name("rtx".into())));
    assert!(parse(" ").is_err());
}

#[test]
fn adapters_are_found_by_number_and_name_and_misses_list_them() {
    let _v = common::validated("adapters");
    let all = device::adapter_infos(wgpu::Backends::all());
    let names: Vec<String> = all.iter().map(|a| a.name.clone()).collect();
    let at = |part: &str| names.iter().position(|n| n.to_lowercase().contains(part)).unwrap_or_else(|| panic!("no {part} in {names:?}"));
    let (lvp, ss) = (at("llvmpipe"), at("swiftshader"));
    let name = |c: AdapterChoice| device::select(&c).map(|a| a.get_info().name).map_err(|e| format!("{e:#}"));
    // By number: the place in `cvae adapters`' list.
    assert_eq!(name(AdapterChoice::Index(ss)).unwrap(), names[ss]);
    // By a part of the name, any case; llvmpipe on Vulkan and on GL is one device: Vulkan.
    assert_eq!(name(AdapterChoice::Name("SWIFTshader".into())).unwrap(), names[ss]);
    let a = device::select(&AdapterChoice::Name("llvmpipe".into())).unwrap();
    assert_eq!((a.get_info().name, a.get_info().backend), (names[lvp].clone(), wgpu::Backend::Vulkan));
    // Misses and ambiguity are errors that list the adapters.
    for (bad, says) in
        [(AdapterChoice::Index(99), "no adapter #99"), (AdapterChoice::Name("no such gpu".into()), "no adapter's name contains")]
    {
        let e = name(bad).unwrap_err();
        assert!(e.contains(says) && e.contains(&names[ss]) && e.contains(&names[lvp]), "{e}");
    }
    let e = name(AdapterChoice::Name("e".into())).unwrap_err();
    assert!(e.contains("several adapters") && e.contains(&format!("#{ss}")), "{e}");
    // auto: both are CPUs on Vulkan; llvmpipe's 8-lane subgroups decide, and the report says so.
    assert_eq!(name(AdapterChoice::Auto).unwrap(), names[lvp]);
    let (report, n) = device::adapters_report();
    assert_eq!(n, all.len());
    assert!(report.contains(&format!("`--adapter auto` takes #{lvp}")) && report.contains("subgroups of 8 lanes"), "{report}");
}
