//! cvae: a convolutional VAE trained in WGSL compute shaders through wgpu, with a
//! plain-Rust CPU reference of every op as the oracle the shaders are tested against.

pub mod bench;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod gpu;
pub mod images;
pub mod inspect;
pub mod model;
pub mod rng;
pub mod stats;
pub mod train;
