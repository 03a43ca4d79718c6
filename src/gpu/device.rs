//! Finding an adapter and opening a device on it.

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Context, Result};

/// Which adapter to use (`--adapter`): `auto`, a backend, an index into `cvae adapters`'
/// list, or a case-insensitive part of an adapter's name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AdapterChoice {
    /// The adapter most likely fastest (`rank`).
    #[default]
    Auto,
    Vulkan,
    Metal,
    Dx12,
    Gl,
    /// The adapter at this place in `cvae adapters`' list.
    Index(usize),
    /// The one adapter whose name contains this, ignoring case.
    Name(String),
}

impl std::str::FromStr for AdapterChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Ok(match s.to_lowercase().as_str() {
            "" => return Err("an adapter: auto, vulkan, metal, dx12, gl, an index from `cvae adapters` or part of a name".into()),
            "auto" => AdapterChoice::Auto,
            "vulkan" => AdapterChoice::Vulkan,
            "metal" => AdapterChoice::Metal,
            "dx12" => AdapterChoice::Dx12,
            "gl" => AdapterChoice::Gl,
            _ => match s.parse::<usize>() {
                Ok(i) => AdapterChoice::Index(i),
                Err(_) => AdapterChoice::Name(s.to_string()),
            },
        })
    }
}

impl std::fmt::Display for AdapterChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdapterChoice::Auto => write!(f, "auto"),
            AdapterChoice::Vulkan => write!(f, "vulkan"),
            AdapterChoice::Metal => write!(f, "metal"),
            AdapterChoice::Dx12 => write!(f, "dx12"),
            AdapterChoice::Gl => write!(f, "gl"),
            AdapterChoice::Index(i) => write!(f, "{i}"),
            AdapterChoice::Name(n) => write!(f, "{n}"),
        }
    }
}

impl AdapterChoice {
    /// The backends this choice looks on.
    pub fn backends(&self) -> wgpu::Backends {
        match self {
            AdapterChoice::Vulkan => wgpu::Backends::VULKAN,
            AdapterChoice::Metal => wgpu::Backends::METAL,
            AdapterChoice::Dx12 => wgpu::Backends::DX12,
            AdapterChoice::Gl => wgpu::Backends::GL,
            AdapterChoice::Auto | AdapterChoice::Index(_) | AdapterChoice::Name(_) => wgpu::Backends::all(),
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

/// The process's one wgpu instance, on every backend. One, not one per look at the
/// adapters: each Vulkan instance loads the drivers and layers again (and the validation
/// layer starts its log file anew, losing what an earlier instance wrote there).
pub fn instance() -> &'static wgpu::Instance {
    static INSTANCE: std::sync::OnceLock<wgpu::Instance> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| {
        quiet_driver_noise();
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::all();
        wgpu::Instance::new(desc)
    })
}

/// Run `f` on every adapter wgpu can see on the given backends, one thread at a time:
/// wgpu's GL backend makes the instance's one EGL context current on the calling thread
/// to list its adapter and again to drop it, and a second thread doing either meanwhile
/// panics inside wgpu (EGL BadAccess). An adapter kept from `f` is a clone.
fn with_adapters<R>(backends: wgpu::Backends, f: impl FnOnce(&[wgpu::Adapter]) -> R) -> R {
    static LISTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LISTING.lock().unwrap_or_else(|p| p.into_inner());
    let adapters = pollster::block_on(instance().enumerate_adapters(backends));
    let r = f(&adapters);
    drop(adapters);
    r
}

/// What wgpu tells of every adapter on the given backends, in `cvae adapters`' order.
pub fn adapter_infos(backends: wgpu::Backends) -> Vec<wgpu::AdapterInfo> {
    with_adapters(backends, |a| a.iter().map(|a| a.get_info()).collect())
}

pub fn describe(info: &wgpu::AdapterInfo) -> String {
    let driver = match (info.driver.is_empty(), info.driver_info.is_empty()) {
        (true, _) => "unknown driver".to_string(),
        (false, true) => info.driver.clone(),
        (false, false) => format!("{} {}", info.driver, info.driver_info),
    };
    format!("{} ({:?}, {:?}, {})", info.name, info.backend, info.device_type, driver)
}

/// The adapters as `cvae adapters` lists them, one numbered line each.
fn table(adapters: &[wgpu::Adapter]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<3} {:<40} {:<8} {:<14} {:<9} driver", "#", "name", "backend", "type", "subgroups");
    for (i, a) in adapters.iter().enumerate() {
        let info = a.get_info();
        let driver = format!("{} {}", info.driver, info.driver_info);
        let lanes = if !a.features().contains(wgpu::Features::SUBGROUP) {
            "none".to_string()
        } else if info.subgroup_min_size == info.subgroup_max_size {
            info.subgroup_min_size.to_string()
        } else {
            format!("{}-{}", info.subgroup_min_size, info.subgroup_max_size)
        };
        let _ = writeln!(
            s,
            "{:<3} {:<40} {:<8} {:<14} {:<9} {}",
            i,
            info.name,
            format!("{:?}", info.backend),
            format!("{:?}", info.device_type),
            lanes,
            driver.trim()
        );
    }
    s
}

/// A table of the adapters, or a message saying there are none and how to get one.
pub fn adapters_report() -> (String, usize) {
    with_adapters(wgpu::Backends::all(), |adapters| {
        if adapters.is_empty() {
            return (format!("No GPU adapter found (looked on Vulkan, Metal, DX12 and GL).\n{LAVAPIPE_HELP}\n"), 0);
        }
        let mut s = table(adapters);
        if let Some(best) = (0..adapters.len()).min_by_key(|&i| rank(&adapters[i], i)) {
            let _ = writeln!(s, "\n`--adapter auto` takes #{best}: {}", describe(&adapters[best].get_info()));
            let _ = writeln!(
                s,
                "  (auto ranks by type: discrete GPU, integrated, virtual, other, CPU; then a native API over GL;\n   \
                 then subgroups of {SUBGROUP_LANES} lanes, which cvae's subgroup kernels need; then the order above)"
            );
        }
        let _ = writeln!(s, "Choose another with --adapter N (its # above) or --adapter NAME (part of its name, any case).");
        (s, adapters.len())
    })
}

/// Smaller is preferred by `auto`: the device type, a native API, 8-lane subgroups
/// (the subgroup kernels run there), then the order wgpu lists them in.
fn rank(adapter: &wgpu::Adapter, index: usize) -> (u8, u8, u8, usize) {
    let info = adapter.get_info();
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    // GL lacks compute features we like to have; prefer the native APIs.
    let backend = u8::from(info.backend == wgpu::Backend::Gl);
    (kind, backend, u8::from(!subgroups_fit(adapter)), index)
}

/// Whether the adapter has subgroups of exactly the width the subgroup kernels are
/// written for: there cvae asks for the feature and offers that family.
fn subgroups_fit(adapter: &wgpu::Adapter) -> bool {
    let info = adapter.get_info();
    adapter.features().contains(wgpu::Features::SUBGROUP)
        && info.subgroup_min_size == SUBGROUP_LANES
        && info.subgroup_max_size == SUBGROUP_LANES
}

/// The adapter `choice` names, or an error that lists the adapters there are.
pub fn select(choice: &AdapterChoice) -> Result<wgpu::Adapter> {
    let picked = with_adapters(choice.backends(), |adapters| -> Result<wgpu::Adapter, String> {
        match choice {
            AdapterChoice::Index(i) => {
                adapters.get(*i).cloned().ok_or_else(|| format!("--adapter {i}: there is no adapter #{i} ({} found)", adapters.len()))
            }
            AdapterChoice::Name(part) => {
                let want = part.to_lowercase();
                let mut hits: Vec<(usize, &wgpu::Adapter)> =
                    adapters.iter().enumerate().filter(|(_, a)| a.get_info().name.to_lowercase().contains(&want)).collect();
                if hits.is_empty() {
                    return Err(format!("--adapter {part}: no adapter's name contains {part:?}"));
                }
                // One device on several backends (llvmpipe on Vulkan and GL) is one
                // choice: the native API. Different devices are ambiguous.
                let first = hits[0].1.get_info().name;
                if hits.iter().any(|(_, a)| a.get_info().name != first) {
                    let names: Vec<String> = hits.iter().map(|(i, a)| format!("#{i} {}", a.get_info().name)).collect();
                    return Err(format!(
                        "--adapter {part}: {part:?} is part of several adapters' names ({}); give its number or more of its name",
                        names.join(", ")
                    ));
                }
                hits.sort_by_key(|&(i, a)| rank(a, i));
                Ok(hits[0].1.clone())
            }
            _ => (0..adapters.len())
                .min_by_key(|&i| rank(&adapters[i], i))
                .map(|i| adapters[i].clone())
                .ok_or_else(|| format!("no adapter for --adapter {choice}")),
        }
    });
    picked.map_err(|e| {
        let listing = with_adapters(wgpu::Backends::all(), |all| {
            if all.is_empty() {
                format!("no adapter exists on any backend.\n{LAVAPIPE_HELP}")
            } else {
                format!("the adapters are:\n{}", table(all))
            }
        });
        // A backend with nothing on it: also how to get one.
        let help = match choice {
            AdapterChoice::Index(_) | AdapterChoice::Name(_) => String::new(),
            _ => format!("\n{LAVAPIPE_HELP}"),
        };
        anyhow!("{e}; {}{help}", listing.trim_end())
    })
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
    /// Open a device on the adapter `choice` names (`select`), asking for
    /// nothing beyond wgpu's default limits, plus timestamp queries and subgroups
    /// when present.
    pub fn open(choice: AdapterChoice) -> Result<Gpu> {
        Gpu::on(select(&choice)?)
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
        // optional: without them those parts are simply not offered. The subgroup
        // kernels are written for subgroups of exactly 8 lanes, so elsewhere the feature
        // is not asked for and their file is neither parsed nor built: SwiftShader (4
        // lanes) exhausted the host's memory compiling its unrolled kernels.
        let mut features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        if subgroups_fit(&adapter) {
            features |= wgpu::Features::SUBGROUP;
        }
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

/// The subgroup width `shaders/subgroup.wgsl` is written for.
pub const SUBGROUP_LANES: u32 = 8;

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
