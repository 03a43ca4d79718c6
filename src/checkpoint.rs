//! Checkpoints in safetensors format: every parameter under a readable name with
//! Keras's layout, the optimizer state, and in the metadata the whole config, the
//! epoch and the step count. Written atomically (temporary file, fsync, rename).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, TensorView};

use crate::atomic_write::write_atomic;
use crate::config::TrainConfig;
use crate::model::{Heads, Model, Optimizer};

pub const FORMAT: &str = "cvae-checkpoint-1";
/// A parameters-only file (`cvae export`, the weights shipped in the binary): the
/// named parameter tensors and the run's config, no optimizer state.
pub const WEIGHTS_FORMAT: &str = "cvae-weights-1";
pub const FILE: &str = "checkpoint.safetensors";

/// Everything needed to continue training exactly where it stopped.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub config: TrainConfig,
    /// The last completed epoch.
    pub epoch: u32,
    /// Training steps done (the noise counter and Adam's t).
    pub step: u64,
    pub params: Vec<f32>,
    /// Optimizer slots in the order of `slot_names`.
    pub slots: Vec<Vec<f32>>,
    /// Set when training was interrupted inside an epoch: that epoch's progress.
    pub partial: Option<Partial>,
    /// False for a parameters-only file: it can be looked into or trained from
    /// (`--init-from`), not resumed.
    pub resumable: bool,
}

/// An epoch interrupted after `losses.len()` batches (Ctrl-C).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Partial {
    pub epoch: u32,
    /// The loss of every batch done so far.
    pub losses: Vec<f32>,
    /// Training seconds spent on the epoch so far.
    pub seconds: f64,
}

/// Keras's names for the optimizer state.
pub fn slot_names(opt: &Optimizer) -> &'static [&'static str] {
    match opt {
        Optimizer::Adam { .. } => &["momentum", "velocity"],
        Optimizer::RmsProp { .. } => &["velocity"],
    }
}

/// The parameters as named tensors in Keras's layout. The Keras preset's two
/// heads, stored as one [in, 2L] kernel, come out as `encoder.z_mean.*` and
/// `encoder.z_log_var.*`, as the Keras program names them.
pub fn named_tensors(model: &Model, flat: &[f32]) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for p in &model.params {
        let data = &flat[p.offset..p.offset + p.len];
        if model.heads == Heads::TwoDense && p.name.starts_with("encoder.heads.") {
            let l = model.latent;
            let suffix = p.name.trim_start_matches("encoder.heads.");
            if p.shape.len() == 2 {
                let inputs = p.shape[0];
                let half = |h: usize| data.chunks(2 * l).flat_map(|row| row[h * l..(h + 1) * l].to_vec()).collect::<Vec<f32>>();
                out.push((format!("encoder.z_mean.{suffix}"), vec![inputs, l], half(0)));
                out.push((format!("encoder.z_log_var.{suffix}"), vec![inputs, l], half(1)));
            } else {
                out.push((format!("encoder.z_mean.{suffix}"), vec![l], data[..l].to_vec()));
                out.push((format!("encoder.z_log_var.{suffix}"), vec![l], data[l..].to_vec()));
            }
        } else {
            out.push((p.name.clone(), p.shape.clone(), data.to_vec()));
        }
    }
    out
}

/// Looks a tensor up by name: its shape and f32 values.
pub type TensorLookup<'a> = dyn Fn(&str) -> Option<(Vec<usize>, Vec<f32>)> + 'a;

/// The inverse of `named_tensors`: a flat buffer from named tensors, checking every name and shape.
pub fn flat_from_named(model: &Model, get: &TensorLookup<'_>, file: &str, prefix: &str) -> Result<Vec<f32>> {
    let template = named_tensors(model, &vec![0.0; model.num_params]);
    let mut tensors = HashMap::new();
    for (name, shape, _) in &template {
        let full = format!("{prefix}{name}");
        let (got_shape, data) = get(&full).ok_or_else(|| {
            anyhow!("{file}: tensor {full} is missing (is this a checkpoint of {} with latent {}?)", model.preset, model.latent)
        })?;
        if &got_shape != shape {
            bail!("{file}: tensor {full} has shape {got_shape:?}, expected {shape:?} for {} with latent {}", model.preset, model.latent);
        }
        tensors.insert(name.clone(), data);
    }
    let mut flat = vec![0.0f32; model.num_params];
    for p in &model.params {
        let dst = &mut flat[p.offset..p.offset + p.len];
        if model.heads == Heads::TwoDense && p.name.starts_with("encoder.heads.") {
            let l = model.latent;
            let suffix = p.name.trim_start_matches("encoder.heads.");
            let mean = &tensors[&format!("encoder.z_mean.{suffix}")];
            let logvar = &tensors[&format!("encoder.z_log_var.{suffix}")];
            for (r, row) in dst.chunks_mut(2 * l).enumerate() {
                row[..l].copy_from_slice(&mean[r * l..(r + 1) * l]);
                row[l..].copy_from_slice(&logvar[r * l..(r + 1) * l]);
            }
        } else {
            dst.copy_from_slice(&tensors[&p.name]);
        }
    }
    Ok(flat)
}

pub fn save(path: &Path, model: &Model, opt: &Optimizer, ck: &Checkpoint) -> Result<()> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = named_tensors(model, &ck.params);
    for (slot, name) in ck.slots.iter().zip(slot_names(opt)) {
        for (n, shape, data) in named_tensors(model, slot) {
            tensors.push((format!("optimizer.{name}.{n}"), shape, data));
        }
    }
    let mut meta = HashMap::new();
    describe(&mut meta, FORMAT, model, ck)?;
    meta.insert("seed".to_string(), ck.config.seed.to_string());
    meta.insert("rng".to_string(), "pcg4d counter-based: state is (seed, step, epoch)".to_string());
    if let Some(p) = &ck.partial {
        meta.insert("partial_epoch".to_string(), serde_json::to_string(p)?);
    }
    write_tensors(path, tensors, meta, "checkpoint")
}

/// The metadata every file of ours carries: its format, the preset, the run's config,
/// its epoch and step.
fn describe(meta: &mut HashMap<String, String>, format: &str, model: &Model, ck: &Checkpoint) -> Result<()> {
    meta.insert("format".to_string(), format.to_string());
    meta.insert("preset".to_string(), model.preset.name().to_string());
    meta.insert("config".to_string(), serde_json::to_string(&ck.config)?);
    meta.insert("epoch".to_string(), ck.epoch.to_string());
    meta.insert("step".to_string(), ck.step.to_string());
    Ok(())
}

/// Serialize f32 tensors with `meta` and write them atomically (`what` names the file).
fn write_tensors(path: &Path, tensors: Vec<(String, Vec<usize>, Vec<f32>)>, meta: HashMap<String, String>, what: &str) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.into_iter().map(|(n, s, d)| (n, s, bytemuck::cast_slice(&d).to_vec())).collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let data = safetensors::serialize(views, Some(meta)).with_context(|| format!("serializing the {what}"))?;
    write_atomic(path, &data).with_context(|| format!("writing {what} {}", path.display()))
}

/// Write the parameters alone (Keras names and layouts) with the run's config, epoch
/// and step and any `notes` in the metadata: a file to look into, share, ship, or
/// start another run from, in a third of a checkpoint's size.
pub fn save_weights(path: &Path, model: &Model, ck: &Checkpoint, notes: &[(&str, String)]) -> Result<()> {
    let mut meta: HashMap<String, String> = notes.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    describe(&mut meta, WEIGHTS_FORMAT, model, ck)?;
    write_tensors(path, named_tensors(model, &ck.params), meta, "weights")
}

/// Read a checkpoint file, or the `checkpoint.safetensors` inside a run folder.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let path = if path.is_dir() { path.join(FILE) } else { path.to_path_buf() };
    let file = path.display().to_string();
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read checkpoint {file}"))?;
    load_bytes(&bytes, &file)
}

/// Parse a checkpoint from memory; `file` names it in errors.
pub fn load_bytes(bytes: &[u8], file: &str) -> Result<Checkpoint> {
    let file = file.to_string();
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| anyhow!("{file}: not a valid safetensors file: {e}"))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| anyhow!("{file}: bad header: {e}"))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let field = |k: &str| meta.get(k).cloned().ok_or_else(|| anyhow!("{file}: metadata field {k:?} is missing; not a cvae checkpoint?"));
    let format = field("format")?;
    if format != FORMAT && format != WEIGHTS_FORMAT {
        bail!("{file}: format {format:?}, expected {FORMAT:?} (a checkpoint) or {WEIGHTS_FORMAT:?} (parameters only)");
    }
    let resumable = format == FORMAT;
    let config: TrainConfig =
        serde_json::from_str(&field("config")?).with_context(|| format!("{file}: the config in the metadata does not parse"))?;
    let epoch: u32 = field("epoch")?.parse().with_context(|| format!("{file}: bad epoch"))?;
    let step: u64 = field("step")?.parse().with_context(|| format!("{file}: bad step"))?;
    let model = config.model().with_context(|| format!("{file}: the saved config does not describe a valid model"))?;
    let opt = config.optimizer();
    let get = |name: &str| -> Option<(Vec<usize>, Vec<f32>)> {
        let t = st.tensor(name).ok()?;
        if t.dtype() != Dtype::F32 {
            return None;
        }
        let data: Vec<f32> = t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Some((t.shape().to_vec(), data))
    };
    let params = flat_from_named(&model, &get, &file, "")?;
    let mut slots = Vec::new();
    for name in slot_names(&opt).iter().filter(|_| resumable) {
        slots.push(flat_from_named(&model, &get, &file, &format!("optimizer.{name}."))?);
    }
    let partial = match meta.get("partial_epoch") {
        Some(p) => Some(serde_json::from_str(p).with_context(|| format!("{file}: the partial_epoch metadata does not parse"))?),
        None => None,
    };
    Ok(Checkpoint { config, epoch, step, params, slots, partial, resumable })
}
