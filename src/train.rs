//! `cvae train`: the reference training program on the GPU, epoch by epoch, with
//! the test-set ELBO, sample grids, a curve, checkpoints and a GIF in a run folder.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::atomic_write;
use crate::checkpoint::{self, Checkpoint};
pub use crate::config::TrainConfig;
use crate::data::Dataset;
use crate::gpu::kernels::Kernels;
use crate::gpu::ops::Variant;
use crate::gpu::plan;
use crate::gpu::trainer::{batch_weighted_mean, check_limits, Trainer, TrainerSpec};
use crate::gpu::{AdapterChoice, Gpu};
use crate::images;
use crate::model::Model;

use crate::rng::{Rng, Stream};

/// How many fixed latent vectors the epoch grids show (4 x 4, as the reference).
pub const GRID: usize = 16;

/// Where and how to run (the default: the auto adapter and kernels, a fresh run).
#[derive(Default)]
pub struct RunOptions {
    pub out: PathBuf,
    pub adapter: AdapterChoice,
    pub quiet: bool,
    /// Continue from the checkpoint in `out`.
    pub resume: bool,
    /// Allow writing into a folder that already holds a run.
    pub force: bool,
    /// With `resume`: continue with this learning rate instead of the saved one.
    pub resume_lr: Option<f32>,
    /// Set (by a Ctrl-C handler) to stop after the batch in flight and save where the run stands.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// `--variant`: one kernel family everywhere, or `Auto` to choose by measurement
    /// (ignored on resume, which keeps the run's own kernels).
    pub variant: Variant,
    /// Where measured kernel choices are cached (None: the user's cache folder).
    pub kernel_cache: Option<PathBuf>,
    /// A fresh run starts from these parameters (flat layout) instead of the
    /// initialisation of the seed; `config.init_from` names them.
    pub init_params: Option<Vec<f32>>,
    /// Where to publish the progress inside each epoch (`cvae train --serve`).
    pub live: Option<Arc<crate::live::Live>>,
}

/// The result of a run, for callers and tests.
pub struct RunSummary {
    pub last_elbo: f64,
    pub epochs_done: u32,
}

const METRICS: &str = "metrics.csv";
const METRICS_HEADER: &str = "epoch,train_loss,test_elbo,seconds,images_per_second\n";

pub fn default_out_dir() -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from("runs").join(format_utc(secs))
}

/// YYYYMMDD-HHMMSS in UTC, without a date crate.
fn format_utc(secs: u64) -> String {
    let days = secs / 86400;
    let rem = secs % 86400;
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn say(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("{msg}");
    }
}

/// A run opened for training: its configuration, model, data on the device and
/// where it starts.
struct Opened {
    config: TrainConfig,
    resumed: Option<Checkpoint>,
    data: Dataset,
}

/// Read the checkpoint to resume, or prepare a fresh run folder; then the data.
fn open_run(config: TrainConfig, opts: &RunOptions) -> Result<Opened> {
    let out = &opts.out;
    // Resume: the saved config rules, except the number of epochs and, when asked, the learning rate.
    let (mut config, resumed) = if opts.resume {
        let ck = checkpoint::load(out).with_context(|| format!("cannot resume from {}", out.display()))?;
        if !ck.resumable {
            crate::usage!(
                "{} holds parameters only (no optimizer state, no step count), so a run cannot resume from it exactly; start a new run from these weights with `cvae train --init-from {} --out NEW_FOLDER`",
                out.display(),
                out.display()
            );
        }
        let mut c = ck.config.clone();
        c.epochs = config.epochs.max(ck.epoch);
        if let Some(lr) = opts.resume_lr {
            c.lr = lr;
        }
        (c, Some(ck))
    } else {
        prepare_out_dir(out, opts.force)?;
        (config, None)
    };
    config.validate()?;
    let model = config.model()?;
    let mut data = Dataset::load(config.data_dir.as_deref())?;
    if config.train_size > data.train.len() && config.train_size != usize::MAX {
        crate::usage!("--train-size {} is more than the {} training images in {}", config.train_size, data.train.len(), data.source);
    }
    if config.test_size > data.test.len() && config.test_size != usize::MAX {
        crate::usage!("--test-size {} is more than the {} test images in {}", config.test_size, data.test.len(), data.source);
    }
    data.train.truncate(config.train_size);
    data.test.truncate(config.test_size);
    // Record the sizes actually used (the default means "all").
    config.train_size = data.train.len();
    config.test_size = data.test.len();
    if (data.train.rows * data.train.cols) != model.image.len() {
        bail!("{} holds {}x{} images; the {} preset needs 28x28", data.source, data.train.rows, data.train.cols, config.preset);
    }
    Ok(Opened { config, resumed, data })
}

/// Train (or resume) a run. Prints one line per epoch as the reference program does.
pub fn run(config: TrainConfig, opts: &RunOptions) -> Result<RunSummary> {
    // The device opens and the shaders are checked while the data is decoded (on a
    // warm lavapipe start, 0.3 s of the 2 s before the first step, on one core).
    let (opened, device) = std::thread::scope(|s| {
        let device = s.spawn(|| -> Result<(Gpu, Kernels)> {
            let gpu = Gpu::open(opts.adapter.clone())?;
            let kernels = Kernels::new(&gpu)?;
            Ok((gpu, kernels))
        });
        (open_run(config, opts), device.join())
    });
    let Opened { mut config, resumed, data } = opened?;
    let (gpu, kernels) = device.map_err(|_| anyhow::anyhow!("opening the device panicked"))??;
    let out = &opts.out;
    let model = config.model()?;
    say(opts.quiet, &format!("adapter: {}", gpu.name()));
    let (train, test) = (&data.train, &data.test);
    let what = format!("{} training and {} test images from {}", train.len(), test.len(), data.source);
    say(opts.quiet, &format!("model: {} ({} parameters), {what}", config.preset, model.num_params));
    // Refuse a batch over the device's limits before anything is measured at it.
    check_limits(&gpu, &model, config.batch_size.max(GRID), train)?;
    if resumed.is_none() {
        config.kernels =
            plan::choose(&gpu, &kernels, &model, config.batch_size, opts.variant, opts.kernel_cache.as_deref(), opts.quiet)?.plan;
    }
    let fixed_z = Rng::new(config.seed).normals(Stream::Samples, 0, GRID * model.latent);
    let init = match (&resumed, &opts.init_params) {
        (Some(ck), _) => ck.params.clone(),
        (None, Some(p)) if p.len() == model.num_params => p.clone(),
        (None, Some(p)) => bail!(
            "the weights to start from hold {} parameters; {} with latent {} has {}",
            p.len(),
            config.preset,
            config.latent_dim,
            model.num_params
        ),
        (None, None) => model.init_params(config.seed),
    };
    let spec = TrainerSpec {
        model: &model,
        optimizer: config.optimizer(),
        batch: config.batch_size,
        seed: config.seed,
        binarize: config.binarize,
        train,
        test,
        params: &init,
        fixed_z: &fixed_z,
        plan: config.kernels.clone(),
    };
    let mut trainer = Trainer::new(&gpu, &kernels, spec)?;
    // The images now live on the device; the host copy is not needed again.
    let train_len = train.len();
    drop(data);
    let mut run = Run { config: &config, opts, model: &model, train_len, last_complete: 0 };
    let (start_epoch, mut partial) = run.start(&mut trainer, resumed.as_ref())?;
    let mut last_elbo = f64::NAN;
    for epoch in start_epoch..=config.epochs {
        last_elbo = run.epoch(&mut trainer, epoch, partial.take())?;
    }
    trainer.finish()?;
    let frames = images::write_gif(out, &out.join("cvae.gif"))?;
    say(opts.quiet, &format!("wrote cvae.gif ({frames} frames), {METRICS}, elbo.png and {} in {}", checkpoint::FILE, out.display()));
    Ok(RunSummary { last_elbo, epochs_done: config.epochs })
}

/// A run in progress: what every epoch needs.
struct Run<'r> {
    config: &'r TrainConfig,
    opts: &'r RunOptions,
    model: &'r Model,
    train_len: usize,
    /// The last complete epoch (what a checkpoint written now holds).
    last_complete: u32,
}

impl Run<'_> {
    /// Where to start: after the last complete epoch, or inside an interrupted one.
    /// A fresh run writes its config, the metrics header and the untrained grid.
    fn start(&mut self, trainer: &mut Trainer<'_>, resumed: Option<&Checkpoint>) -> Result<(u32, Option<checkpoint::Partial>)> {
        let (out, quiet) = (&self.opts.out, self.opts.quiet);
        let Some(ck) = resumed else {
            atomic_write::write_atomic(&out.join("config.json"), (serde_json::to_string_pretty(self.config)? + "\n").as_bytes())?;
            atomic_write::write_atomic(&out.join(METRICS), METRICS_HEADER.as_bytes())?;
            save_grid(trainer, out, 0)?;
            return Ok((1, None));
        };
        trainer.write_state(&ck.params, &ck.slots, ck.step)?;
        self.last_complete = ck.epoch;
        Ok(match &ck.partial {
            Some(p) => {
                say(
                    quiet,
                    &format!("resuming {} inside epoch {} after batch {} (step {})", out.display(), p.epoch, p.losses.len(), ck.step),
                );
                (p.epoch, Some(p.clone()))
            }
            None => {
                say(quiet, &format!("resuming {} after epoch {} (step {})", out.display(), ck.epoch, ck.step));
                (ck.epoch + 1, None)
            }
        })
    }

    /// One epoch: its training steps (continuing an interrupted one from `partial`),
    /// then the test-set ELBO, the files and the checkpoint. Returns the ELBO.
    fn epoch(&mut self, trainer: &mut Trainer<'_>, epoch: u32, partial: Option<checkpoint::Partial>) -> Result<f64> {
        let (config, opts) = (self.config, self.opts);
        let bar = progress_bar(opts.quiet, self.train_len as u64, epoch, config.epochs);
        let t0 = Instant::now();
        trainer.begin_epoch(epoch);
        // An interrupted epoch continues where it stopped, with the losses it had.
        let (first, mut losses, earlier_seconds) = match partial {
            Some(p) => (p.losses.len(), p.losses, p.seconds),
            None => (0, Vec::new(), 0.0),
        };
        let resumed_at = (first * config.batch_size).min(self.train_len);
        bar.inc(resumed_at as u64);
        let steps = trainer.steps_per_epoch();
        let mut done = resumed_at;
        for j in first..steps {
            let n = trainer.train_step(j)?;
            bar.inc(n as u64);
            done += n;
            self.publish(epoch, done, (done - resumed_at) as f64 / t0.elapsed().as_secs_f64().max(1e-9));
            if opts.interrupt.as_ref().is_some_and(|f| f.load(Ordering::SeqCst)) && j + 1 < steps {
                // Ctrl-C: the batch in flight is finished; save where the epoch stands.
                losses.extend(&trainer.read_train_losses(j + 1)?[first..]);
                bar.finish_and_clear();
                let seconds = earlier_seconds + t0.elapsed().as_secs_f64();
                return Err(self.save_interrupted(trainer, epoch, losses, seconds)?.into());
            }
        }
        // The one read of the epoch: every batch's loss (waits for the GPU to finish).
        losses.extend(&trainer.read_train_losses(steps)?[first..]);
        let seconds = earlier_seconds + t0.elapsed().as_secs_f64();
        bar.finish_and_clear();
        check_finite(&losses, epoch, trainer.step() - steps as u64)?;
        let train_loss = batch_weighted_mean(&losses, self.train_len, config.batch_size);
        let elbo = -trainer.evaluate(epoch)?;
        if !opts.quiet {
            println!("Epoch: {epoch}, Test set ELBO: {elbo:.4}, time elapse for current epoch: {seconds:.3}");
        }
        let out = &opts.out;
        append_metrics(out, epoch, train_loss, elbo, seconds, self.train_len as f64 / seconds)?;
        save_grid(trainer, out, epoch)?;
        plot_elbo(out)?;
        self.save(trainer, epoch, None)?;
        self.last_complete = epoch;
        Ok(elbo)
    }

    /// Tell a same-process server how far the epoch is: `done` images, at `rate` per second.
    fn publish(&self, epoch: u32, done: usize, rate: f64) {
        let Some(live) = &self.opts.live else { return };
        let left = (self.train_len - done) + (self.config.epochs - epoch) as usize * self.train_len;
        live.set(crate::live::Progress {
            epoch,
            epochs: self.config.epochs,
            images: done,
            epoch_images: self.train_len,
            images_per_second: rate,
            eta_seconds: left as f64 / rate.max(1e-9),
            running: true,
        });
    }

    /// Write the checkpoint: the state after `epoch` (or inside an interrupted epoch).
    fn save(&self, trainer: &Trainer<'_>, epoch: u32, partial: Option<checkpoint::Partial>) -> Result<()> {
        let (params, slots) = trainer.read_state()?;
        let ck = Checkpoint { config: self.config.clone(), epoch, step: trainer.step(), params, slots, partial, resumable: true };
        checkpoint::save(&self.opts.out.join(checkpoint::FILE), self.model, &self.config.optimizer(), &ck)
    }

    /// After Ctrl-C inside `epoch`: checkpoint where it stands, and say how to go on.
    fn save_interrupted(&self, trainer: &Trainer<'_>, epoch: u32, losses: Vec<f32>, seconds: f64) -> Result<Interrupted> {
        let done = losses.len();
        check_finite(&losses, epoch, trainer.step() - done as u64)?;
        self.save(trainer, self.last_complete, Some(checkpoint::Partial { epoch, losses, seconds }))?;
        Ok(Interrupted { epoch, batch: done, steps: trainer.steps_per_epoch(), out: self.opts.out.clone() })
    }
}

/// Training stopped by Ctrl-C after a checkpoint of where it stood was written.
#[derive(Debug, thiserror::Error)]
#[error("interrupted during epoch {epoch} after batch {batch} of {steps}; the checkpoint holds where it stopped: continue with `cvae train --resume {}`", out.display())]
pub struct Interrupted {
    pub epoch: u32,
    pub batch: usize,
    pub steps: usize,
    pub out: PathBuf,
}

/// A NaN or infinite batch loss stops the run, naming where it appeared; the last
/// checkpoint (of the last good epoch) is left as it is.
/// `epoch_start` is the step number of the epoch's first batch.
fn check_finite(losses: &[f32], epoch: u32, epoch_start: u64) -> Result<()> {
    if let Some(j) = losses.iter().position(|l| !l.is_finite()) {
        bail!(
            "the training loss became {} at epoch {epoch}, batch {j} (step {}); stopped without writing a checkpoint for this epoch, the last good one is kept (try a smaller --lr)",
            losses[j],
            epoch_start + j as u64
        );
    }
    Ok(())
}

fn prepare_out_dir(out: &Path, force: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        crate::usage!("--out {} is a file, not a folder", out.display());
    }
    if out.join(checkpoint::FILE).exists() && !force {
        crate::usage!(
            "{} already holds a run (checkpoint.safetensors); use --resume {} to continue it, --force to overwrite it, or another --out",
            out.display(),
            out.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create the run folder {}", out.display()))?;
    // Probe that it is writable before training for an epoch.
    let probe = out.join(".cvae-write-test");
    std::fs::write(&probe, b"").with_context(|| format!("the run folder {} is not writable", out.display()))?;
    let _ = std::fs::remove_file(probe);
    if force {
        for f in images::epoch_images(out)? {
            let _ = std::fs::remove_file(f);
        }
    }
    Ok(())
}

fn save_grid(trainer: &mut Trainer<'_>, out: &Path, epoch: u32) -> Result<()> {
    let probs = trainer.decode_fixed()?;
    let image = trainer.model().image;
    let (h, w) = match image {
        crate::model::Shape::Image { h, w, .. } => (h, w),
        crate::model::Shape::Flat(n) => (1, n),
    };
    let img = images::grid(&probs, probs.len() / image.len(), h, w, 4, 4, 2);
    images::save_png(&out.join(format!("image_at_epoch_{epoch:04}.png")), &image::DynamicImage::ImageLuma8(img))
}

/// Add a row to metrics.csv, rewriting the file atomically.
fn append_metrics(out: &Path, epoch: u32, train_loss: f64, elbo: f64, seconds: f64, ips: f64) -> Result<()> {
    let path = out.join(METRICS);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|_| METRICS_HEADER.to_string());
    // A row for this epoch from an earlier, interrupted attempt is replaced.
    let keep: Vec<&str> = text.lines().filter(|l| l.split(',').next() != Some(&epoch.to_string())).collect();
    text = keep.join("\n") + "\n";
    writeln!(text, "{epoch},{train_loss:.6},{elbo:.6},{seconds:.3},{ips:.1}").expect("writing to a String");
    atomic_write::write_atomic(&path, text.as_bytes())
}

/// One row of metrics.csv.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MetricsRow {
    pub epoch: u32,
    pub train_loss: f64,
    pub test_elbo: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

impl MetricsRow {
    /// A data line of metrics.csv (as `append_metrics` writes it), or None.
    pub fn parse(line: &str) -> Option<MetricsRow> {
        let f: Vec<&str> = line.split(',').collect();
        let num = |i: usize| f.get(i)?.parse::<f64>().ok();
        Some(MetricsRow {
            epoch: f.first()?.parse().ok()?,
            train_loss: num(1)?,
            test_elbo: num(2)?,
            seconds: num(3)?,
            images_per_second: num(4)?,
        })
    }
}

/// Read metrics.csv back: (epoch, train loss, test ELBO) per row, the columns that do
/// not depend on the machine's speed.
pub fn read_metrics(out: &Path) -> Result<Vec<(u32, f64, f64)>> {
    let path = out.join(METRICS);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let r =
            MetricsRow::parse(line).with_context(|| format!("{}: line {} is not {}", path.display(), i + 1, METRICS_HEADER.trim_end()))?;
        rows.push((r.epoch, r.train_loss, r.test_elbo));
    }
    Ok(rows)
}

fn plot_elbo(out: &Path) -> Result<()> {
    let rows = read_metrics(out)?;
    let points: Vec<(f64, f64)> = rows.iter().map(|&(e, _, elbo)| (e as f64, elbo)).collect();
    images::line_plot(&out.join("elbo.png"), "Test set ELBO", "epoch", "ELBO (nats)", &points)
}

fn progress_bar(quiet: bool, len: u64, epoch: u32, epochs: u32) -> indicatif::ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} images, {per_sec}, ETA {eta}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("epoch {epoch}/{epochs}"));
    bar
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_format() {
        assert_eq!(super::format_utc(0), "19700101-000000");
        assert_eq!(super::format_utc(1_795_000_000), "20261118-110640");
        assert_eq!(super::format_utc(951_782_400), "20000229-000000");
    }
}
