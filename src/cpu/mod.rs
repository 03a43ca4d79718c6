//! The CPU reference: plain, readable f32 Rust for every op the shaders compute.
//! It is the oracle the GPU parity tests compare against, not a training backend.
//!
//! Each function here has a WGSL entry point of the same name in `shaders/`.
//! Tensors are NHWC and batch-major; kernels use Keras's layouts.

pub mod activation;
pub mod conv2d;
pub mod conv2d_transpose;
pub mod dense;
pub mod gather;
pub mod kl;
pub mod loss;
pub mod optim;
pub mod reparam;
pub mod vae;

pub use activation::{bias_backward, relu_backward};
