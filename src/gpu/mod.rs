//! Everything that talks to wgpu, from the bottom up: the device (`device`), the
//! uniform structs shared with the shaders (`uniforms`), pipelines and dispatches
//! (`kernels`), one launcher per entry point (`ops`), which family runs each op
//! (`plan`), the network's passes (`network`, beside `cpu::vae`), and its two
//! users: `trainer` and `runner`.

pub mod device;
pub mod kernels;
pub mod network;
pub mod ops;
pub mod plan;
pub mod runner;
pub mod trainer;
pub mod uniforms;

pub use device::{AdapterChoice, Gpu};
