//! Finding an adapter and opening a device on it.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};

/// Which backend to use; `auto` prefers a real GPU over a software one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AdapterChoice {
    #[default]
    Auto,
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl AdapterChoice {
    pub fn backends(self) -> wgpu::Backends {
        match self {
            AdapterChoice::Auto => wgpu::Backends::all(),
            AdapterChoice::Vulkan => wgpu::Backends::VULKAN,
            AdapterChoice::Metal => wgpu::Backends::METAL,
            AdapterChoice::Dx12 => wgpu::Backends::DX12,
            AdapterChoice::Gl => wgpu::Backends::GL,
        }
    }
}

/// How to get a software Vulkan driver; every "no adapter" message ends with it.
pub const LAVAPIPE_HELP: &str = "On a Linux machine without a GPU, install Mesa's software Vulkan driver (lavapipe):\n    sudo apt-get install -y mesa-vulkan-drivers\nthen check with `vulkaninfo --summary` (package vulkan-tools) or `cvae adapters`.";

/// Mesa prints "XDG_RUNTIME_DIR is invalid or not set" on headless machines.
/// Point it at a private folder before any driver loads, so the user sees none of that.
pub fn quiet_driver_noise() {
    let ok = std::env::var_os("XDG_RUNTIME_DIR").map(|d| std::path::Path::new(&d).is_dir()).unwrap_or(false);
    if ok {
        return;
    }
    // One folder per user, reused by every run (not one per process).
    let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "user".into());
    let dir = std::env::temp_dir().join(format!("cvae-runtime-{user}"));
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        // Safe in practice: called at the start of main and of tests, before other threads read the environment.
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

pub fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

/// Every adapter wgpu can see on the given backends.
pub fn enumerate(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    quiet_driver_noise();
    pollster::block_on(instance(backends).enumerate_adapters(backends))
}

pub fn describe(info: &wgpu::AdapterInfo) -> String {
    let driver = match (info.driver.is_empty(), info.driver_info.is_empty()) {
        (true, _) => "unknown driver".to_string(),
        (false, true) => info.driver.clone(),
        (false, false) => format!("{} {}", info.driver, info.driver_info),
    };
    format!("{} ({:?}, {:?}, {})", info.name, info.backend, info.device_type, driver)
}

/// A table of the adapters, or a message saying there are none and how to get one.
pub fn adapters_report() -> (String, usize) {
    let adapters = enumerate(wgpu::Backends::all());
    if adapters.is_empty() {
        return (format!("No GPU adapter found (looked on Vulkan, Metal, DX12 and GL).\n{LAVAPIPE_HELP}\n"), 0);
    }
    let mut s = String::new();
    let _ = writeln!(s, "{:<3} {:<40} {:<8} {:<14} driver", "#", "name", "backend", "type");
    for (i, a) in adapters.iter().enumerate() {
        let info = a.get_info();
        let driver = format!("{} {}", info.driver, info.driver_info);
        let _ = writeln!(
            s,
            "{:<3} {:<40} {:<8} {:<14} {}",
            i,
            info.name,
            format!("{:?}", info.backend),
            format!("{:?}", info.device_type),
            driver.trim()
        );
    }
    if let Some(best) = pick(adapters) {
        let _ = writeln!(s, "\n`--adapter auto` would use: {}", describe(&best.get_info()));
    }
    (s, 1)
}

fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    // GL lacks compute features we like to have; prefer the native APIs.
    let backend = if info.backend == wgpu::Backend::Gl { 1 } else { 0 };
    (kind, backend)
}

fn pick(adapters: Vec<wgpu::Adapter>) -> Option<wgpu::Adapter> {
    adapters.into_iter().min_by_key(|a| rank(&a.get_info()))
}

/// The device and queue the program computes on, with what the adapter offers.
pub struct Gpu {
    /// The first error the device reported outside any call that returns one
    /// (validation, out of memory, device loss), kept for `check` instead of a panic.
    pub fault: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Bytes of buffers this program has created on the device (never freed while
    /// training, so this is also the peak).
    pub allocated: std::sync::atomic::AtomicU64,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    /// The adapter the device was opened on, for `sibling`.
    adapter: wgpu::Adapter,
}

impl Gpu {
    /// Open a device on the best adapter of the chosen backend, asking for
    /// nothing beyond wgpu's default limits, plus timestamp queries and subgroups
    /// when present.
    pub fn open(choice: AdapterChoice) -> Result<Gpu> {
        let adapters = enumerate(choice.backends());
        let Some(adapter) = pick(adapters) else {
            let others = enumerate(wgpu::Backends::all());
            let list = if others.is_empty() {
                "none on any backend".to_string()
            } else {
                others.iter().map(|a| describe(&a.get_info())).collect::<Vec<_>>().join("; ")
            };
            bail!("no adapter for --adapter {} (adapters that exist: {list}).\n{LAVAPIPE_HELP}", format!("{choice:?}").to_lowercase());
        };
        Gpu::on(adapter)
    }

    /// A second device on the same adapter, with the same features and limits: its own
    /// queue, so lavapipe compiles kernels for it on another thread (`Kernels::warm`).
    pub fn sibling(&self) -> Result<Gpu> {
        Gpu::on(self.adapter.clone())
    }

    fn on(adapter: wgpu::Adapter) -> Result<Gpu> {
        let info = adapter.get_info();
        let needed = wgpu::Limits::default();
        let have = adapter.limits();
        if let Some(missing) = missing_limits(&needed, &have) {
            bail!("adapter {} is below wgpu's default limits, which cvae needs: {missing}", describe(&info));
        }
        // Timestamps for the benchmark, subgroups for the kernels that use them; both
        // optional: without them those parts are simply not offered.
        let features = adapter.features() & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SUBGROUP);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("cvae"),
            required_features: features,
            required_limits: needed.clone(),
            ..Default::default()
        }))
        .with_context(|| format!("could not open a device on {}", describe(&info)))?;
        let fault: std::sync::Arc<std::sync::Mutex<Option<String>>> = Default::default();
        let f = fault.clone();
        device.on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
            let mut slot = f.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));
        let f = fault.clone();
        device.set_device_lost_callback(move |reason, msg| {
            let mut slot = f.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| format!("the device was lost ({reason:?}): {msg}"));
        });
        Ok(Gpu { fault, allocated: Default::default(), device, queue, info, features, limits: needed, adapter })
    }

    pub fn name(&self) -> String {
        describe(&self.info)
    }
}

/// Name every default limit the adapter falls short of, or None.
fn missing_limits(needed: &wgpu::Limits, have: &wgpu::Limits) -> Option<String> {
    let mut out = Vec::new();
    needed.check_limits_with_fail_fn(have, false, |name, want, got| out.push(format!("{name}: need {want}, adapter has {got}")));
    (!out.is_empty()).then(|| out.join(", "))
}

/// Usage of every tensor buffer: bound as storage, filled and read by copies.
pub const TENSOR: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

impl Gpu {
    fn count(&self, buf: wgpu::Buffer) -> wgpu::Buffer {
        self.allocated.fetch_add(buf.size(), std::sync::atomic::Ordering::Relaxed);
        buf
    }

    /// A storage buffer holding `data` (at least 4 bytes: empty bindings are invalid).
    pub fn upload<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        // Padded to 16 bytes, so a vec4 view of the buffer reaches every element.
        let mut contents = bytes.to_vec();
        contents.resize(bytes.len().max(1).next_multiple_of(16), 0);
        self.count(self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &contents,
            usage: TENSOR,
        }))
    }

    /// A storage buffer of raw bytes, read in shaders as `array<u32>` with byte i of
    /// a word at bits 8i (WGSL is little-endian). Padded with zeros.
    pub fn upload_bytes(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        self.upload(label, bytes)
    }

    /// A zero-filled storage buffer of `n` f32 (padded to 16 bytes).
    pub fn zeros(&self, label: &str, n: usize) -> wgpu::Buffer {
        self.count(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (n.max(1) * 4).next_multiple_of(16) as u64,
            usage: TENSOR,
            mapped_at_creation: false,
        }))
    }

    /// A uniform buffer that the host rewrites with `queue.write_buffer`.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.uniform_bytes(label, bytemuck::bytes_of(value))
    }

    pub fn uniform_bytes(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.count(self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytes,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        }))
    }

    /// Bytes of device buffers this program has created.
    pub fn allocated_bytes(&self) -> u64 {
        self.allocated.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Block until the queue is idle; then report any error the device raised.
    pub fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| anyhow::anyhow!("waiting for the GPU failed: {e}"))?;
        self.check()
    }

    /// An error if the device has reported a fault (validation error, out of memory, device lost).
    pub fn check(&self) -> Result<()> {
        let slot = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(msg) => bail!("the GPU reported an error on {}: {msg}", describe(&self.info)),
            None => Ok(()),
        }
    }

    /// Copy a buffer back to the host (blocking: tests, checkpoints, images; never per batch).
    pub fn read<T: bytemuck::Pod>(&self, buf: &wgpu::Buffer) -> Result<Vec<T>> {
        let size = buf.size();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv().context("the GPU never answered the read-back")?.context("mapping the read-back buffer failed")?;
        let out = {
            let view = staging.slice(..).get_mapped_range().context("reading the mapped buffer")?;
            bytemuck::cast_slice(&view).to_vec()
        };
        staging.unmap();
        Ok(out)
    }
}
