//! A wgpu device can be created. This test fails (never skips) when no adapter exists.

use cvae::gpu::{device, AdapterChoice, Gpu};

#[test]
fn a_device_opens_on_some_adapter() {
    device::quiet_driver_noise();
    let gpu = match Gpu::open(AdapterChoice::Auto) {
        Ok(g) => g,
        Err(e) => panic!("no GPU device: {e:#}\n(these tests need a real adapter; on a headless Linux machine `apt-get install -y mesa-vulkan-drivers` provides lavapipe)"),
    };
    eprintln!("adapter: {}", gpu.name());
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
