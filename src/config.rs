//! `TrainConfig`: everything that defines a run, saved as the run's `config.json`
//! and in every checkpoint's metadata.

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::gpu::plan::Plan;
use crate::model::{KlKind, Model, Optimizer, Preset};

/// Everything that defines a run; saved as `config.json` and in every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub preset: Preset,
    pub latent_dim: usize,
    pub batch_size: usize,
    pub epochs: u32,
    pub lr: f32,
    pub seed: u64,
    pub kl: KlKind,
    pub binarize: bool,
    /// Images used from each split (all of them by default).
    pub train_size: usize,
    pub test_size: usize,
    /// `--data-dir`, or None for the built-in MNIST.
    pub data_dir: Option<PathBuf>,
    /// The kernel family of every op of every layer, chosen when the run started
    /// (`gpu::plan`); a resumed run keeps it. Empty in runs made before plans existed,
    /// which used blocked kernels where they fit (`Variant::Auto`).
    #[serde(default)]
    pub kernels: Plan,
    /// The weights the run started from (`--init-from`, `--pretrained`), or None for
    /// the initialisation of `seed`.
    #[serde(default)]
    pub init_from: Option<String>,
}

impl TrainConfig {
    pub fn model(&self) -> Result<Model> {
        Ok(Model::preset(self.preset, self.latent_dim, self.kl)?)
    }
    pub fn optimizer(&self) -> Optimizer {
        self.preset.default_optimizer().with_lr(self.lr)
    }
    /// Check the numbers a user can get wrong, before any work.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            crate::usage!("--batch-size must be at least 1, got 0");
        }
        if self.latent_dim == 0 {
            crate::usage!("--latent-dim must be at least 1, got 0");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            crate::usage!("--lr must be a positive number, got {}", self.lr);
        }
        if self.epochs == 0 {
            crate::usage!("--epochs must be at least 1, got 0");
        }
        if self.train_size == 0 || self.test_size == 0 {
            crate::usage!("--train-size and --test-size must be at least 1");
        }
        Ok(())
    }
}
