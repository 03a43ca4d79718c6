//! Weights trained by cvae itself, built into the binary the way MNIST is, so that
//! every look-inside command works on a fresh machine with no training
//! (`--pretrained tf-cvae|keras-vae`), and so that training can start from them
//! (`cvae train --pretrained NAME`). How each was trained is in its metadata and in
//! the README ("Built-in weights").

use anyhow::Result;

use crate::checkpoint::{self, Checkpoint};

/// The shipped weights, by the preset they were trained as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pretrained {
    /// The TensorFlow CVAE (latent 50) from cvae's run of the tutorial on MNIST.
    TfCvae,
    /// The Keras VAE with a 2-D latent space, trained on MNIST.
    KerasVae,
}

impl Pretrained {
    pub fn name(self) -> &'static str {
        match self {
            Pretrained::TfCvae => "tf-cvae",
            Pretrained::KerasVae => "keras-vae",
        }
    }

    /// The parameters-only safetensors file, as shipped.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Pretrained::TfCvae => include_bytes!("../assets/pretrained/tf-cvae.safetensors"),
            Pretrained::KerasVae => include_bytes!("../assets/pretrained/keras-vae.safetensors"),
        }
    }

    /// The weights with the config they were trained with.
    pub fn load(self) -> Result<Checkpoint> {
        checkpoint::load_bytes(self.bytes(), &format!("the built-in {} weights", self.name()))
    }
}
