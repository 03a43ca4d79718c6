//! cvae: a convolutional VAE trained in WGSL compute shaders through wgpu, with a
//! plain-Rust CPU reference of every op as the oracle the shaders are tested against.

pub mod bench;

/// A mistake in what the user asked for (a flag out of range, a file that is not
/// what it should be named as): the CLI exits with code 2 for these, 1 for failures.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Return early with a `UsageError`.
#[macro_export]
macro_rules! usage {
    ($($arg:tt)*) => { return Err($crate::UsageError(format!($($arg)*)).into()) };
}

pub mod atomic_write;
pub mod checkpoint;
pub mod config;
pub mod cpu;
pub mod data;
pub mod gpu;
pub mod http;
pub mod images;
pub mod inspect;
pub mod live;
pub mod load;
pub mod math;
pub mod model;
pub mod pretrained;
pub mod rng;
pub mod serve;
pub mod stats;
pub mod train;
