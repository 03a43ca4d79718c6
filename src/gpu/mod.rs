//! Everything that talks to wgpu: the device, the shader pipelines, buffers and
//! the per-batch scheduler.

pub mod device;
pub mod kernels;
pub mod ops;
pub mod trainer;

pub use device::{AdapterChoice, Gpu};
