//! The `cvae` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cvae::bench;
use cvae::data::Dataset;
use cvae::gpu::device;
use cvae::gpu::ops::Variant;
use cvae::gpu::AdapterChoice;
use cvae::inspect;
use cvae::model::{KlKind, Model, Preset};
use cvae::pretrained::Pretrained;
use cvae::train::{self, RunOptions, TrainConfig};

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
    /// Train a preset on the GPU: test-set ELBO per epoch, sample grids, a curve, checkpoints, a GIF.
    Train(TrainArgs),
    /// Time training steps and every kernel; compare with the adapter's ceiling.
    Bench(BenchCli),
    /// Decode fresh random latent vectors into a grid of samples.
    Sample(SampleArgs),
    /// Test images over their reconstructions.
    Reconstruct(ReconstructArgs),
    /// The n x n grid of decodings over two latent axes (the Keras program's picture).
    Manifold(ManifoldArgs),
    /// The test set's latent means as a scatter plot colored by digit.
    Scatter(ScatterArgs),
    /// Decodings along the line between two test images' encodings.
    Interpolate(InterpolateArgs),
    /// Test-set ELBO, its two terms, and an importance-weighted log p(x).
    Eval(EvalArgs),
    /// A local web page: watch a run train, and explore a model's latent space with the pointer.
    Serve(ServeArgs),
    /// Load a running `cvae serve` with clients that each keep one decode in flight.
    Load(LoadArgs),
    /// Rebuild a run folder's animated GIF from its epoch grids.
    Gif {
        /// The run folder.
        run: PathBuf,
    },
    /// Write a run's parameters alone (no optimizer state) to a safetensors file, to
    /// look into, share, or train from (`cvae train --init-from`).
    Export {
        /// A run folder (its latest checkpoint) or a checkpoint file.
        run: PathBuf,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Load a data set and print what it holds (checks the files).
    Data {
        /// A folder with the four MNIST-format IDX files, gzipped or raw (default: the built-in MNIST).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Which reference model: tf-cvae (TensorFlow's CVAE tutorial) or keras-vae (2-D
    /// latent) [default: tf-cvae, or the preset of --init-from / --pretrained weights].
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Number of epochs (the reference program trains 100).
    #[arg(long, default_value_t = 100)]
    epochs: u32,
    /// Size of the latent space [default: 50 for tf-cvae, 2 for keras-vae].
    #[arg(long)]
    latent_dim: Option<usize>,
    /// Images per training step [default: 100 for tf-cvae, 16 for keras-vae].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate [default: Adam 1e-4 for tf-cvae, RMSprop 1e-3 for keras-vae].
    #[arg(long)]
    lr: Option<f32>,
    /// One seed fixes initialisation, shuffling and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A folder with the four MNIST-format IDX files, gzipped or raw [default: the built-in MNIST].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The run folder [default: runs/<UTC timestamp>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use only the first N training images (quick runs).
    #[arg(long)]
    train_size: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    test_size: Option<usize>,
    /// The KL term: single-sample Monte Carlo (the TF tutorial) or closed form [default: mc for tf-cvae, analytic for keras-vae].
    #[arg(long, value_enum)]
    kl: Option<KlKind>,
    /// Keep grayscale pixels instead of binarizing at 0.5.
    #[arg(long)]
    no_binarize: bool,
    /// GPU adapter: auto, a backend (vulkan, metal, dx12, gl), a number from `cvae adapters`
    /// or part of an adapter's name; auto prefers a real GPU over a software one.
    #[arg(long, default_value = "auto")]
    adapter: AdapterChoice,
    /// Continue the run in this folder from its last checkpoint (its saved config is used; --epochs may extend it, --lr may change it).
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Write into a folder that already holds a run, replacing it.
    #[arg(long)]
    force: bool,
    /// Start from the parameters of this run, checkpoint or weights file (with a fresh
    /// optimizer): fine-tuning, e.g. on another --data-dir.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["resume", "pretrained"])]
    init_from: Option<PathBuf>,
    /// Start from the weights built into cvae (with a fresh optimizer).
    #[arg(long, value_enum, conflicts_with = "resume")]
    pretrained: Option<Pretrained>,
    /// Kernel family for every layer; auto times each family on each layer once per
    /// adapter and keeps the fastest (cached in the user's cache folder).
    #[arg(long, value_enum, default_value_t = Variant::Auto)]
    variant: Variant,
    /// No progress bar and no per-epoch lines.
    #[arg(long, short)]
    quiet: bool,
    /// Also serve the web page of the run (training curve, grids, latent space) while it trains.
    #[arg(long)]
    serve: bool,
    #[command(flatten)]
    listen: Listen,
}

/// Where the web page listens.
#[derive(clap::Args)]
struct Listen {
    /// Address to serve on; anything but 127.0.0.1 lets other machines in (no login).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to serve on (0 for any free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("model").required(true).args(["run", "pretrained"])))]
struct ServeArgs {
    /// A run folder (its curve and grids are shown too, and the model reloads after
    /// each epoch), a checkpoint or a weights file.
    run: Option<PathBuf>,
    /// Use the weights built into cvae instead of a run.
    #[arg(long, value_enum)]
    pretrained: Option<Pretrained>,
    #[command(flatten)]
    listen: Listen,
    #[arg(long, default_value = "auto")]
    adapter: AdapterChoice,
    /// How many test images' latent means the page plots.
    #[arg(long, default_value_t = cvae::serve::DEFAULT_POINTS)]
    points: usize,
    /// Read test images from this folder instead of the model's data set.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// The server, as `cvae serve` prints it.
    #[arg(default_value = "http://127.0.0.1:8080/")]
    url: String,
    /// Clients at once, each with its own connection and one decode in flight.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// How long to keep the load on.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Latent vectors per request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Seconds without an answer after which a request counts as dropped.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Pointer events a second: a client asks again at most this often, as the page
    /// does on each pointer move (0: at once, a stress test).
    #[arg(long, default_value_t = 60.0)]
    hz: f64,
}

#[derive(clap::Args)]
struct BenchCli {
    #[arg(long, default_value = "auto")]
    adapter: AdapterChoice,
    #[arg(long, value_enum, default_value_t = Preset::TfCvae)]
    preset: Preset,
    /// Images per step [default: the preset's].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Timed training steps per repetition.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Repetitions (medians and min-max are over these).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Kernel sandbox: run this op's variants on one layer's shape, check and time them (with --layer).
    #[arg(long, value_name = "ENTRY_POINT")]
    kernel: Option<String>,
    /// The layer for --kernel, e.g. decoder.conv2d_transpose_1.
    #[arg(long)]
    layer: Option<String>,
    /// Kernel family for every layer; auto uses the per-layer choice by measurement.
    #[arg(long, value_enum, default_value_t = Variant::Auto)]
    variant: Variant,
}

/// Where a look-inside command reads its model and runs.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("model").required(true).args(["run", "pretrained"])))]
struct ModelArgs {
    /// A run folder (its latest checkpoint), a checkpoint or a weights file.
    run: Option<PathBuf>,
    /// Use the weights built into cvae instead of a run (no training needed).
    #[arg(long, value_enum)]
    pretrained: Option<Pretrained>,
    #[arg(long, default_value = "auto")]
    adapter: AdapterChoice,
    /// The PNG to write [default: inside the run folder].
    #[arg(long)]
    out: Option<PathBuf>,
}

impl ModelArgs {
    /// The model of a run folder, a file or built-in weights, on the chosen adapter.
    fn session(&self) -> Result<inspect::Session> {
        inspect::Session::open(&source(self.run.clone(), self.pretrained), self.adapter.clone())
    }
}

#[derive(clap::Args)]
struct SampleArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// How many samples (shown as a square grid).
    #[arg(long, default_value_t = 16)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Scale of the latent noise (below 1 gives cleaner, less varied digits).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
}

#[derive(clap::Args)]
struct ReconstructArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// How many test images.
    #[arg(long, default_value_t = 10)]
    n: usize,
    /// Index of the first test image.
    #[arg(long, default_value_t = 0)]
    start: usize,
    /// Decode a sample of q(z|x) instead of its mean.
    #[arg(long)]
    sample: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Read test images from this folder instead of the run's data set.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ManifoldArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Grid size (n x n).
    #[arg(long, default_value_t = 15)]
    n: usize,
    /// Two latent dimensions like 0,1 (the rest held at 0), or pca for the test set's first two principal directions.
    #[arg(long, default_value = "0,1")]
    axes: inspect::Axes,
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ScatterArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Use only the first N test images.
    #[arg(long)]
    test_size: Option<usize>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
struct InterpolateArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Index of the first test image.
    #[arg(long, default_value_t = 0)]
    from: usize,
    /// Index of the second test image.
    #[arg(long, default_value_t = 1)]
    to: usize,
    /// Decodings along the way (both ends included).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Follow the great circle instead of the straight line.
    #[arg(long)]
    slerp: bool,
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("model").required(true).args(["run", "pretrained"])))]
struct EvalArgs {
    /// A run folder (its latest checkpoint), a checkpoint or a weights file.
    run: Option<PathBuf>,
    /// Use the weights built into cvae instead of a run.
    #[arg(long, value_enum)]
    pretrained: Option<Pretrained>,
    #[arg(long, default_value = "auto")]
    adapter: AdapterChoice,
    /// Importance samples per image for log p(x) (the literature uses up to 5,000).
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Fixes the noise of the samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Use only the first N test images.
    #[arg(long)]
    test_size: Option<usize>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Adapters => adapters(),
        Command::Model { preset, latent_dim } => model(preset, latent_dim),
        Command::Train(a) => train(a),
        Command::Bench(b) => bench(b),
        Command::Sample(a) => {
            let s = a.m.session()?;
            wrote(inspect::sample(&s, a.n, a.seed, a.temperature, a.m.out)?)
        }
        Command::Reconstruct(a) => {
            let s = a.m.session()?;
            wrote(inspect::reconstruct(&s, a.n, a.start, a.sample, a.seed, a.data_dir.as_deref(), a.m.out)?)
        }
        Command::Manifold(a) => {
            let s = a.m.session()?;
            wrote(inspect::manifold(&s, a.n, &a.axes, a.data_dir.as_deref(), a.m.out)?)
        }
        Command::Scatter(a) => {
            let s = a.m.session()?;
            wrote(inspect::scatter(&s, a.data_dir.as_deref(), a.test_size, a.m.out)?)
        }
        Command::Interpolate(a) => {
            let s = a.m.session()?;
            wrote(inspect::interpolate(&s, a.from, a.to, a.steps, a.slerp, a.data_dir.as_deref(), a.m.out)?)
        }
        Command::Eval(a) => eval(a),
        Command::Serve(a) => serve(a),
        Command::Load(a) => load(a),
        Command::Gif { run } => {
            let frames = cvae::images::write_gif(&run, &run.join("cvae.gif"))?;
            println!("wrote {} ({frames} frames)", run.join("cvae.gif").display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Data { data_dir } => data(data_dir),
        Command::Export { run, out } => export(&run, &out),
    }
}

/// A run path or built-in weights (clap makes sure exactly one was given).
fn source(run: Option<PathBuf>, pretrained: Option<Pretrained>) -> inspect::Source {
    match (run, pretrained) {
        (_, Some(p)) => inspect::Source::Pretrained(p),
        (Some(r), None) => inspect::Source::Path(r),
        (None, None) => inspect::Source::Pretrained(Pretrained::TfCvae),
    }
}

fn wrote(path: PathBuf) -> Result<ExitCode> {
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

fn export(run: &std::path::Path, out: &std::path::Path) -> Result<ExitCode> {
    let ck = cvae::checkpoint::load(run)?;
    let model = ck.config.model()?;
    cvae::checkpoint::save_weights(out, &model, &ck, &[("exported_from", run.display().to_string())])?;
    println!("wrote {} ({} parameters of {} after epoch {})", out.display(), model.num_params, ck.config.preset, ck.epoch);
    Ok(ExitCode::SUCCESS)
}

fn adapters() -> Result<ExitCode> {
    let (report, count) = device::adapters_report();
    print!("{report}");
    Ok(if count == 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn model(preset: Preset, latent_dim: Option<usize>) -> Result<ExitCode> {
    let latent = latent_dim.unwrap_or(preset.default_latent());
    if latent == 0 {
        cvae::usage!("--latent-dim must be at least 1, got 0");
    }
    let model = Model::preset(preset, latent, preset.default_kl())?;
    print!("{}", model.summary());
    Ok(ExitCode::SUCCESS)
}

fn data(data_dir: Option<PathBuf>) -> Result<ExitCode> {
    let d = Dataset::load(data_dir.as_deref())?;
    println!("{}: {} training and {} test images of {}x{} pixels", d.source, d.train.len(), d.test.len(), d.train.rows, d.train.cols);
    let mut counts = [0usize; 10];
    for &l in &d.train.labels {
        counts[l as usize] += 1;
    }
    println!("training images per class: {counts:?}");
    Ok(ExitCode::SUCCESS)
}

fn eval(a: EvalArgs) -> Result<ExitCode> {
    let s = inspect::Session::open(&source(a.run, a.pretrained), a.adapter)?;
    let r = inspect::evaluate(&s, a.samples, a.seed, a.data_dir.as_deref(), a.test_size, !a.json)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} test images, {} after {} epochs, {} samples per image (seed {}), {:.1} s",
        r.test_images, s.ck.config.preset, s.ck.epoch, r.samples, r.seed, r.seconds
    );
    println!("each figure: mean over images +- its standard error (nats per image)");
    println!("  ELBO, single sample as `cvae train` prints it  {:>10.3} +- {:.3}", r.elbo, r.elbo_se);
    println!("    reconstruction -log p(x|z)                {:>10.3} +- {:.3}", r.reconstruction, r.reconstruction_se);
    println!("    KL, Monte Carlo log q(z|x) - log p(z)      {:>10.3} +- {:.3}", r.kl, r.kl_se);
    println!("    KL, closed form (exact given the encoder)  {:>10.3} +- {:.3}", r.kl_closed_form, r.kl_closed_form_se);
    println!("  ELBO with the closed-form KL                  {:>10.3} +- {:.3}", r.elbo_closed_form_kl, r.elbo_closed_form_kl_se);
    println!("  log p(x) >= importance-weighted bound, K={:<5} {:>10.3} +- {:.3}", r.samples, r.log_px, r.log_px_se);
    Ok(ExitCode::SUCCESS)
}

fn bench(b: BenchCli) -> Result<ExitCode> {
    let args = bench::BenchArgs {
        adapter: b.adapter,
        preset: b.preset,
        batch: b.batch_size,
        steps: b.steps,
        reps: b.reps,
        json: b.json,
        kernel: b.kernel,
        layer: b.layer,
        variant: b.variant,
    };
    if let Some(report) = bench::run(&args)? {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            bench::print(&report);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn serve_options(source: inspect::Source, listen: &Listen, adapter: AdapterChoice) -> cvae::serve::ServeOptions {
    if !matches!(listen.host.as_str(), "127.0.0.1" | "localhost" | "::1") {
        eprintln!("warning: serving on {}: anyone who can reach this machine can use the page (it has no login)", listen.host);
    }
    let run_dir = match &source {
        inspect::Source::Path(p) if p.is_dir() => Some(p.clone()),
        _ => None,
    };
    cvae::serve::ServeOptions {
        source,
        host: listen.host.clone(),
        port: listen.port,
        adapter,
        points: cvae::serve::DEFAULT_POINTS,
        data_dir: None,
        run_dir,
    }
}

fn load(a: LoadArgs) -> Result<ExitCode> {
    // Both become Durations, which panic on NaN, infinity or overflow.
    if !(a.timeout.is_finite() && a.hz.is_finite()) || a.timeout <= 0.0 || a.timeout > 1e9 || a.hz < 0.0 {
        cvae::usage!("--timeout must be a number of seconds above 0 and --hz a number at least 0");
    }
    let opts = cvae::load::LoadOptions {
        url: a.url,
        clients: a.clients,
        seconds: a.seconds,
        batch: a.batch,
        timeout: std::time::Duration::from_secs_f64(a.timeout),
        hz: a.hz,
    };
    println!("{}", cvae::load::run(&opts)?);
    Ok(ExitCode::SUCCESS)
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    if let Some(run) = a.run.as_ref().filter(|r| !r.exists()) {
        cvae::usage!("{} does not exist: give a run folder, a checkpoint or a weights file, or --pretrained", run.display());
    }
    let mut opts = serve_options(source(a.run, a.pretrained), &a.listen, a.adapter);
    opts.points = a.points;
    opts.data_dir = a.data_dir;
    let server = cvae::serve::start(opts, None)?;
    println!("serving on {} (Ctrl-C to stop)", server.url);
    server.wait();
    Ok(ExitCode::SUCCESS)
}

/// The weights a run starts from (`--init-from`, `--pretrained`) and how to name them.
fn init_weights(a: &TrainArgs) -> Result<Option<(cvae::checkpoint::Checkpoint, String)>> {
    Ok(match (&a.init_from, a.pretrained) {
        (Some(f), _) => Some((cvae::checkpoint::load(f)?, f.display().to_string())),
        (None, Some(p)) => Some((p.load()?, format!("pretrained {}", p.name()))),
        (None, None) => None,
    })
}

/// Ctrl-C: finish the batch in flight, save, exit; a second Ctrl-C exits at once, and
/// so does the first once training is over (while the page is still served). Returns
/// the flag the run watches and the one that says training is over.
fn on_ctrl_c() -> (Arc<AtomicBool>, Arc<AtomicBool>) {
    let flag = Arc::new(AtomicBool::new(false));
    let trained = Arc::new(AtomicBool::new(false));
    let (f, done) = (flag.clone(), trained.clone());
    let _ = ctrlc::set_handler(move || {
        if done.load(Ordering::SeqCst) {
            std::process::exit(0);
        }
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nstopping after the batch in flight (Ctrl-C again to quit at once)");
    });
    (flag, trained)
}

/// `train --serve`: the page of the run folder `out`, with the run's live progress.
fn serve_run(out: &std::path::Path, a: &TrainArgs, live: Arc<cvae::live::Live>) -> Result<cvae::serve::Server> {
    let mut opts = serve_options(inspect::Source::Path(out.to_path_buf()), &a.listen, a.adapter.clone());
    // The folder may not exist yet: the page waits for its first epoch.
    opts.run_dir = Some(out.to_path_buf());
    let s = cvae::serve::start(opts, Some(live))?;
    println!("serving the run on {}", s.url);
    Ok(s)
}

fn train(a: TrainArgs) -> Result<ExitCode> {
    let init = init_weights(&a)?;
    // The weights fix the model: its preset and latent size, unless given and different.
    let from = init.as_ref().map(|(ck, _)| &ck.config);
    let preset = a.preset.or(from.map(|c| c.preset)).unwrap_or(Preset::TfCvae);
    let latent_dim = a.latent_dim.or(from.filter(|c| c.preset == preset).map(|c| c.latent_dim)).unwrap_or(preset.default_latent());
    if let Some(c) = from.filter(|c| (c.preset, c.latent_dim) != (preset, latent_dim)) {
        cvae::usage!(
            "the weights to start from are {} with latent {}, not {preset} with latent {latent_dim}; leave out --preset and --latent-dim, or start from other weights",
            c.preset,
            c.latent_dim
        );
    }
    let config = TrainConfig {
        preset,
        latent_dim,
        batch_size: a.batch_size.unwrap_or(preset.default_batch()),
        epochs: a.epochs,
        lr: a.lr.unwrap_or(preset.default_optimizer().lr()),
        seed: a.seed,
        kl: a.kl.or(from.map(|c| c.kl)).unwrap_or(preset.default_kl()),
        binarize: !a.no_binarize,
        train_size: a.train_size.unwrap_or(usize::MAX),
        test_size: a.test_size.unwrap_or(usize::MAX),
        data_dir: a.data_dir.clone(),
        kernels: Default::default(),
        init_from: init.as_ref().map(|(_, name)| name.clone()),
    };
    let resume = a.resume.is_some();
    let out = a.resume.clone().or(a.out.clone()).unwrap_or_else(train::default_out_dir);
    let (flag, trained) = on_ctrl_c();
    let live = a.serve.then(|| Arc::new(cvae::live::Live::default()));
    let server = match &live {
        Some(l) => Some(serve_run(&out, &a, l.clone())?),
        None => None,
    };
    let opts = RunOptions {
        out,
        adapter: a.adapter,
        quiet: a.quiet,
        resume,
        force: a.force,
        resume_lr: a.lr.filter(|_| resume),
        interrupt: Some(flag),
        variant: a.variant,
        kernel_cache: None,
        init_params: init.map(|(ck, _)| ck.params),
        live: live.clone(),
    };
    let result = train::run(config, &opts);
    if let Some(l) = &live {
        l.stop();
    }
    match result {
        Ok(_) => {
            if let Some(s) = server {
                trained.store(true, Ordering::SeqCst);
                println!("training done; still serving on {} (Ctrl-C to stop)", s.url);
                s.wait();
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.downcast_ref::<train::Interrupted>().is_some() => {
            eprintln!("{e}");
            Ok(ExitCode::from(130))
        }
        Err(e) => Err(e),
    }
}

fn main() -> ExitCode {
    device::quiet_driver_noise();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<cvae::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
