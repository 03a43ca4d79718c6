//! The `cvae` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cvae::data::Dataset;
use cvae::gpu::device;
use cvae::model::{Model, Preset};

#[derive(Parser)]
#[command(
    name = "cvae",
    version,
    about = "A convolutional variational autoencoder trained on MNIST in WGSL compute shaders (Vulkan, Metal, DX12 through wgpu)",
    long_about = "A convolutional variational autoencoder trained on MNIST in WGSL compute shaders.\n\n\
        Every number the model computes on the GPU comes from this program's own WGSL kernels; \
        a plain-Rust CPU reference of every op is the oracle they are tested against. \
        MNIST is built into the binary, so no download is needed.\n\n\
        Start with `cvae adapters` to see which GPUs wgpu finds."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the GPU adapters wgpu finds (name, backend, device type, driver).
    Adapters,
    /// Print a preset's layers, shapes and parameter count.
    Model {
        /// Which reference model.
        #[arg(long, value_enum, default_value_t = Preset::TfCvae)]
        preset: Preset,
        /// Size of the latent space (default: the preset's, 50 or 2).
        #[arg(long)]
        latent_dim: Option<usize>,
    },
    /// Load a data set and print what it holds (checks the files).
    Data {
        /// A folder with the four MNIST-format IDX files, gzipped or raw (default: the built-in MNIST).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Adapters => {
            let (report, count) = device::adapters_report();
            print!("{report}");
            Ok(if count == 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Model { preset, latent_dim } => {
            let latent = latent_dim.unwrap_or(preset.default_latent());
            if latent == 0 {
                anyhow::bail!("--latent-dim must be at least 1, got 0");
            }
            let model = Model::preset(preset, latent, preset.default_kl())?;
            print!("{}", model.summary());
            Ok(ExitCode::SUCCESS)
        }
        Command::Data { data_dir } => {
            let d = Dataset::load(data_dir.as_deref())?;
            println!(
                "{}: {} training and {} test images of {}x{} pixels",
                d.source,
                d.train.len(),
                d.test.len(),
                d.train.rows,
                d.train.cols
            );
            let mut counts = [0usize; 10];
            for &l in &d.train.labels {
                counts[l as usize] += 1;
            }
            println!("training images per class: {counts:?}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    device::quiet_driver_noise();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
