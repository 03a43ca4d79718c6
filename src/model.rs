//! The model description: a small Sequential list of layers with shape inference,
//! and the two reference models as presets.
//!
//! Tensors are NHWC (Keras's `channels_last`), so Flatten and Reshape move no data.
//! Kernel layouts are Keras's: Conv2D `[kh, kw, in, out]`, Conv2DTranspose
//! `[kh, kw, out, in]`, Dense `[in, out]`.

use std::fmt;

use crate::rng::{Rng, Stream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    Valid,
    Same,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Linear,
    Relu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Conv2D { filters: usize, kernel: usize, stride: usize, padding: Padding, activation: Activation },
    Conv2DTranspose { filters: usize, kernel: usize, stride: usize, padding: Padding, activation: Activation },
    Dense { units: usize, activation: Activation },
    Flatten,
    Reshape { h: usize, w: usize, c: usize },
}

/// The shape of one example: an image (h, w, c) or a flat vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Image { h: usize, w: usize, c: usize },
    Flat(usize),
}

impl Shape {
    pub fn len(&self) -> usize {
        match *self {
            Shape::Image { h, w, c } => h * w * c,
            Shape::Flat(n) => n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values per pixel: an image's channels; a flat vector is one pixel of them all.
    pub fn channels(&self) -> usize {
        match *self {
            Shape::Image { c, .. } => c,
            Shape::Flat(n) => n,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Shape::Image { h, w, c } => write!(f, "({h}, {w}, {c})"),
            Shape::Flat(n) => write!(f, "({n})"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShapeError {
    #[error("layer {index} ({layer:?}) needs an image input (h, w, c), got {input}")]
    NeedsImage { index: usize, layer: Layer, input: Shape },
    #[error("layer {index} ({layer:?}) needs a flat input, got {input}: add a Flatten first")]
    NeedsFlat { index: usize, layer: Layer, input: Shape },
    #[error("layer {index}: Reshape to ({h}, {w}, {c}) needs {} values, got {input}", h * w * c)]
    Reshape { index: usize, h: usize, w: usize, c: usize, input: Shape },
    #[error("layer {index} ({layer:?}): a size is zero or the kernel is larger than the input {input}")]
    Degenerate { index: usize, layer: Layer, input: Shape },
}

/// Output length and the padding before the first element, as TensorFlow computes them.
/// `same`: out = ceil(in / s), total padding max((out - 1) * s + k - in, 0), the smaller half first.
/// `valid`: out = floor((in - k) / s) + 1, no padding.
pub fn conv_out_len(input: usize, kernel: usize, stride: usize, padding: Padding) -> (usize, usize) {
    match padding {
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + kernel).saturating_sub(input);
            (out, total / 2)
        }
        Padding::Valid => {
            if input < kernel {
                (0, 0)
            } else {
                ((input - kernel) / stride + 1, 0)
            }
        }
    }
}

/// Output length of a transposed conv (Keras's `deconv_output_length` without output padding).
pub fn deconv_out_len(input: usize, kernel: usize, stride: usize, padding: Padding) -> usize {
    match padding {
        Padding::Same => input * stride,
        Padding::Valid => input * stride + kernel.saturating_sub(stride),
    }
}

/// Geometry of one convolution, shared by the CPU reference and the GPU launcher.
///
/// For a Conv2D, `in_*` is its input and `out_*` its output. For a Conv2DTranspose,
/// `in_*`/`out_*` are the transposed op's own input and output, and `pad_*` is the
/// padding of the forward conv that maps its output back to its input: output
/// pixel `(oy, ox)` meets input pixel `(iy, ix)` through kernel tap `(i, j)` when
/// `oy = iy * stride + i - pad_top` (transpose) or `iy = oy * stride + i - pad_top` (conv).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub out_c: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

impl ConvGeom {
    pub fn conv2d(batch: usize, input: (usize, usize, usize), filters: usize, kernel: usize, stride: usize, padding: Padding) -> Self {
        let (h, w, c) = input;
        let (out_h, pad_top) = conv_out_len(h, kernel, stride, padding);
        let (out_w, pad_left) = conv_out_len(w, kernel, stride, padding);
        ConvGeom { batch, in_h: h, in_w: w, in_c: c, out_h, out_w, out_c: filters, k_h: kernel, k_w: kernel, stride, pad_top, pad_left }
    }

    pub fn conv2d_transpose(
        batch: usize,
        input: (usize, usize, usize),
        filters: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
    ) -> Self {
        let (h, w, c) = input;
        let out_h = deconv_out_len(h, kernel, stride, padding);
        let out_w = deconv_out_len(w, kernel, stride, padding);
        // The padding of the conv that maps (out_h, out_w) back to (h, w).
        let pad = |out: usize, inp: usize| match padding {
            Padding::Same => ((inp - 1) * stride + kernel).saturating_sub(out) / 2,
            Padding::Valid => 0,
        };
        ConvGeom {
            batch,
            in_h: h,
            in_w: w,
            in_c: c,
            out_h,
            out_w,
            out_c: filters,
            k_h: kernel,
            k_w: kernel,
            stride,
            pad_top: pad(out_h, h),
            pad_left: pad(out_w, w),
        }
    }

    /// For a Conv2DTranspose geometry: the Conv2D it is the adjoint of (input and
    /// output swapped, same kernel array and padding). The transposed conv's forward
    /// pass is that conv's input gradient, and the other way round.
    pub fn as_forward_conv(&self) -> ConvGeom {
        ConvGeom { in_h: self.out_h, in_w: self.out_w, in_c: self.out_c, out_h: self.in_h, out_w: self.in_w, out_c: self.in_c, ..*self }
    }

    /// A Dense layer as a 1x1 convolution of a 1x1 image (kernel [1, 1, in, out] = [in, out]).
    pub fn dense(batch: usize, inputs: usize, outputs: usize) -> ConvGeom {
        ConvGeom {
            batch,
            in_h: 1,
            in_w: 1,
            in_c: inputs,
            out_h: 1,
            out_w: 1,
            out_c: outputs,
            k_h: 1,
            k_w: 1,
            stride: 1,
            pad_top: 0,
            pad_left: 0,
        }
    }

    pub fn in_len(&self) -> usize {
        self.batch * self.in_h * self.in_w * self.in_c
    }
    pub fn out_len(&self) -> usize {
        self.batch * self.out_h * self.out_w * self.out_c
    }
    pub fn kernel_len(&self) -> usize {
        self.k_h * self.k_w * self.in_c * self.out_c
    }
    /// Multiply-adds of the forward pass, counting only taps that land inside the image.
    pub fn macs(&self, transpose: bool) -> usize {
        let (small_h, small_w, big_h, big_w) =
            if transpose { (self.in_h, self.in_w, self.out_h, self.out_w) } else { (self.out_h, self.out_w, self.in_h, self.in_w) };
        let mut taps = 0;
        for oy in 0..small_h {
            for i in 0..self.k_h {
                let y = (oy * self.stride + i) as isize - self.pad_top as isize;
                if y < 0 || y >= big_h as isize {
                    continue;
                }
                for ox in 0..small_w {
                    for j in 0..self.k_w {
                        let x = (ox * self.stride + j) as isize - self.pad_left as isize;
                        if x >= 0 && x < big_w as isize {
                            taps += 1;
                        }
                    }
                }
            }
        }
        self.batch * taps * self.in_c * self.out_c
    }
}

/// One layer with its inferred shapes and, for layers with weights, where they live.
#[derive(Clone, Debug)]
pub struct LayerInfo {
    pub layer: Layer,
    pub input: Shape,
    pub output: Shape,
    /// Keras-style name, e.g. `conv2d_0` (numbered per kind inside its network).
    pub name: String,
    /// Index into `Model::params` of the kernel; the bias follows it.
    pub kernel_param: Option<usize>,
}

impl LayerInfo {
    /// Geometry of a Conv2D / Conv2DTranspose layer for a given batch.
    pub fn conv_geom(&self, batch: usize) -> Option<ConvGeom> {
        let Shape::Image { h, w, c } = self.input else { return None };
        match self.layer {
            Layer::Conv2D { filters, kernel, stride, padding, .. } => {
                Some(ConvGeom::conv2d(batch, (h, w, c), filters, kernel, stride, padding))
            }
            Layer::Conv2DTranspose { filters, kernel, stride, padding, .. } => {
                Some(ConvGeom::conv2d_transpose(batch, (h, w, c), filters, kernel, stride, padding))
            }
            _ => None,
        }
    }

    pub fn activation(&self) -> Activation {
        match self.layer {
            Layer::Conv2D { activation, .. } | Layer::Conv2DTranspose { activation, .. } | Layer::Dense { activation, .. } => activation,
            _ => Activation::Linear,
        }
    }
}

/// Infer every layer's output shape from the input shape.
pub fn infer_shapes(layers: &[Layer], input: Shape) -> Result<Vec<(Shape, Shape)>, ShapeError> {
    let mut shapes = Vec::with_capacity(layers.len());
    let mut cur = input;
    for (index, &layer) in layers.iter().enumerate() {
        let out = match layer {
            Layer::Conv2D { filters, kernel, stride, padding, .. } | Layer::Conv2DTranspose { filters, kernel, stride, padding, .. } => {
                let Shape::Image { h, w, .. } = cur else {
                    return Err(ShapeError::NeedsImage { index, layer, input: cur });
                };
                let (oh, ow) = if matches!(layer, Layer::Conv2D { .. }) {
                    (conv_out_len(h, kernel, stride, padding).0, conv_out_len(w, kernel, stride, padding).0)
                } else {
                    (deconv_out_len(h, kernel, stride, padding), deconv_out_len(w, kernel, stride, padding))
                };
                if filters == 0 || kernel == 0 || stride == 0 || oh == 0 || ow == 0 {
                    return Err(ShapeError::Degenerate { index, layer, input: cur });
                }
                Shape::Image { h: oh, w: ow, c: filters }
            }
            Layer::Dense { units, .. } => {
                if !matches!(cur, Shape::Flat(_)) {
                    return Err(ShapeError::NeedsFlat { index, layer, input: cur });
                }
                if units == 0 {
                    return Err(ShapeError::Degenerate { index, layer, input: cur });
                }
                Shape::Flat(units)
            }
            Layer::Flatten => Shape::Flat(cur.len()),
            Layer::Reshape { h, w, c } => {
                if h * w * c != cur.len() {
                    return Err(ShapeError::Reshape { index, h, w, c, input: cur });
                }
                Shape::Image { h, w, c }
            }
        };
        shapes.push((cur, out));
        cur = out;
    }
    Ok(shapes)
}

/// One named tensor inside the flat parameter buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamTensor {
    /// e.g. `encoder.conv2d_0.kernel`
    pub name: String,
    /// Keras's layout.
    pub shape: Vec<usize>,
    pub offset: usize,
    pub len: usize,
    /// Glorot fan-in and fan-out for kernels; `None` for biases (zero-initialised).
    pub glorot: Option<(usize, usize)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// TensorFlow's CVAE tutorial: latent 50, Adam 1e-4, batch 100.
    TfCvae,
    /// The Keras VAE with a 2-D latent space: RMSprop 1e-3, batch 16.
    KerasVae,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::TfCvae => "tf-cvae",
            Preset::KerasVae => "keras-vae",
        }
    }
    pub fn default_latent(self) -> usize {
        match self {
            Preset::TfCvae => 50,
            Preset::KerasVae => 2,
        }
    }
    pub fn default_batch(self) -> usize {
        match self {
            Preset::TfCvae => 100,
            Preset::KerasVae => 16,
        }
    }
    pub fn default_optimizer(self) -> Optimizer {
        match self {
            Preset::TfCvae => Optimizer::Adam { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-7 },
            Preset::KerasVae => Optimizer::RmsProp { lr: 1e-3, rho: 0.9, eps: 1e-7 },
        }
    }
    pub fn default_kl(self) -> KlKind {
        match self {
            Preset::TfCvae => KlKind::Mc,
            Preset::KerasVae => KlKind::Analytic,
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    /// Keras/TF Adam: p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps).
    Adam { lr: f32, beta1: f32, beta2: f32, eps: f32 },
    /// Keras RMSprop: p -= lr * g / sqrt(v + eps).
    RmsProp { lr: f32, rho: f32, eps: f32 },
}

impl Optimizer {
    pub fn lr(&self) -> f32 {
        match *self {
            Optimizer::Adam { lr, .. } | Optimizer::RmsProp { lr, .. } => lr,
        }
    }
    pub fn with_lr(self, new: f32) -> Self {
        match self {
            Optimizer::Adam { beta1, beta2, eps, .. } => Optimizer::Adam { lr: new, beta1, beta2, eps },
            Optimizer::RmsProp { rho, eps, .. } => Optimizer::RmsProp { lr: new, rho, eps },
        }
    }
    /// How many state slots per parameter (Adam: m and v; RMSprop: v).
    pub fn state_slots(&self) -> usize {
        match self {
            Optimizer::Adam { .. } => 2,
            Optimizer::RmsProp { .. } => 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KlKind {
    /// Single-sample Monte Carlo: log q(z|x) - log p(z) at the sampled z (the TF tutorial).
    Mc,
    /// Closed form for two Gaussians.
    Analytic,
}

/// How the per-example loss is put together:
/// `recon_scale * sum_pixels BCE(logits, x) + KL`, where the KL is either the
/// single-sample estimate `log q(z|x) - log p(z)` or `kl_scale * sum_l (exp(lv) + m^2 - 1 - lv)`.
/// The batch loss is the mean over examples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossSpec {
    pub recon_scale: f32,
    pub kl: KlKind,
    pub kl_scale: f32,
}

/// How the encoder's last Dense is presented: one Dense(2*latent) split in two
/// (TF), or two Dense(latent) heads on the same input (Keras). Both compute the
/// same thing; they differ in initialisation and in checkpoint names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heads {
    Split,
    TwoDense,
}

/// A VAE: encoder and decoder as Sequential lists with inferred shapes, and one
/// flat parameter buffer carved into named tensors.
#[derive(Clone, Debug)]
pub struct Model {
    pub preset: Preset,
    pub latent: usize,
    pub image: Shape,
    pub encoder: Vec<LayerInfo>,
    pub decoder: Vec<LayerInfo>,
    pub heads: Heads,
    pub params: Vec<ParamTensor>,
    pub num_params: usize,
    pub loss: LossSpec,
}

impl Model {
    pub fn preset(preset: Preset, latent: usize, kl: KlKind) -> Result<Model, ShapeError> {
        use Activation::*;
        use Padding::*;
        let conv = |filters, stride, padding, activation| Layer::Conv2D { filters, kernel: 3, stride, padding, activation };
        let deconv = |filters, stride, activation| Layer::Conv2DTranspose { filters, kernel: 3, stride, padding: Same, activation };
        let image = Shape::Image { h: 28, w: 28, c: 1 };
        let (encoder, decoder, heads, loss) = match preset {
            Preset::TfCvae => (
                vec![
                    conv(32, 2, Valid, Relu),
                    conv(64, 2, Valid, Relu),
                    Layer::Flatten,
                    Layer::Dense { units: 2 * latent, activation: Linear },
                ],
                vec![
                    Layer::Dense { units: 7 * 7 * 32, activation: Relu },
                    Layer::Reshape { h: 7, w: 7, c: 32 },
                    deconv(64, 2, Relu),
                    deconv(32, 2, Relu),
                    deconv(1, 1, Linear),
                ],
                Heads::Split,
                LossSpec { recon_scale: 1.0, kl, kl_scale: 0.5 },
            ),
            Preset::KerasVae => (
                vec![
                    conv(32, 1, Same, Relu),
                    conv(64, 2, Same, Relu),
                    conv(64, 1, Same, Relu),
                    conv(64, 1, Same, Relu),
                    Layer::Flatten,
                    Layer::Dense { units: 32, activation: Relu },
                    Layer::Dense { units: 2 * latent, activation: Linear },
                ],
                vec![
                    Layer::Dense { units: 14 * 14 * 64, activation: Relu },
                    Layer::Reshape { h: 14, w: 14, c: 64 },
                    deconv(32, 2, Relu),
                    conv(1, 1, Same, Linear),
                ],
                Heads::TwoDense,
                // mean over 784 pixels of BCE + 5e-4 * mean over latent dims of -(1 + lv - m^2 - e^lv)
                LossSpec { recon_scale: 1.0 / image.len() as f32, kl, kl_scale: 5e-4 / latent as f32 },
            ),
        };
        Model::new(preset, latent, image, &encoder, &decoder, heads, loss)
    }

    pub fn new(
        preset: Preset,
        latent: usize,
        image: Shape,
        encoder: &[Layer],
        decoder: &[Layer],
        heads: Heads,
        loss: LossSpec,
    ) -> Result<Model, ShapeError> {
        let mut params = Vec::new();
        let enc = describe("encoder", encoder, image, heads, latent, &mut params)?;
        let dec = describe("decoder", decoder, Shape::Flat(latent), Heads::Split, latent, &mut params)?;
        // The encoder must end in 2*latent values and the decoder must give back an image.
        let enc_out = enc.last().map(|l| l.output);
        if enc_out != Some(Shape::Flat(2 * latent)) {
            return Err(ShapeError::Reshape { index: encoder.len(), h: 1, w: 1, c: 2 * latent, input: enc_out.unwrap_or(image) });
        }
        let dec_out = dec.last().map(|l| l.output);
        if dec_out.map(|s| s.len()) != Some(image.len()) {
            let Shape::Image { h, w, c } = image else { unreachable!("images are (h, w, c)") };
            return Err(ShapeError::Reshape { index: decoder.len(), h, w, c, input: dec_out.unwrap_or(image) });
        }
        let num_params = params.iter().map(|p: &ParamTensor| p.len).sum();
        Ok(Model { preset, latent, image, encoder: enc, decoder: dec, heads, params, num_params, loss })
    }

    /// Keras default initialisation: Glorot-uniform kernels, zero biases,
    /// drawn from the counter-based RNG so the same seed gives the same weights anywhere.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let rng = Rng::new(seed);
        let mut out = vec![0.0f32; self.num_params];
        for p in &self.params {
            if let Some((fan_in, fan_out)) = p.glorot {
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                for i in 0..p.len {
                    let u = rng.uniform(Stream::Init, 0, (p.offset + i) as u32);
                    out[p.offset + i] = (2.0 * u - 1.0) * limit;
                }
            }
        }
        out
    }

    pub fn param(&self, name: &str) -> Option<&ParamTensor> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Every layer of encoder then decoder, for code that walks both.
    pub fn layers(&self) -> impl Iterator<Item = &LayerInfo> {
        self.encoder.iter().chain(self.decoder.iter())
    }

    /// A one-line-per-layer summary, like Keras's `model.summary()`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} (latent {}, {} parameters)\n", self.preset, self.latent, self.num_params);
        for (net, layers) in [("encoder", &self.encoder), ("decoder", &self.decoder)] {
            for l in layers.iter() {
                s += &format!("  {net}.{:<20} {:>14} -> {:<14}\n", l.name, l.input.to_string(), l.output.to_string());
            }
        }
        s
    }
}

fn describe(
    net: &str,
    layers: &[Layer],
    input: Shape,
    heads: Heads,
    latent: usize,
    params: &mut Vec<ParamTensor>,
) -> Result<Vec<LayerInfo>, ShapeError> {
    let shapes = infer_shapes(layers, input)?;
    let mut counts = std::collections::HashMap::<&str, usize>::new();
    let mut out = Vec::new();
    for (index, (&layer, &(inp, outp))) in layers.iter().zip(shapes.iter()).enumerate() {
        let kind = match layer {
            Layer::Conv2D { .. } => "conv2d",
            Layer::Conv2DTranspose { .. } => "conv2d_transpose",
            Layer::Dense { .. } => "dense",
            Layer::Flatten => "flatten",
            Layer::Reshape { .. } => "reshape",
        };
        let n = counts.entry(kind).or_default();
        let name = format!("{kind}_{n}");
        *n += 1;
        let is_head = index + 1 == layers.len() && net == "encoder" && heads == Heads::TwoDense;
        let offset: usize = params.iter().map(|p| p.len).sum();
        let kernel_param = match layer {
            Layer::Conv2D { filters, kernel, .. } | Layer::Conv2DTranspose { filters, kernel, .. } => {
                let Shape::Image { c, .. } = inp else { unreachable!("checked by infer_shapes") };
                let conv = matches!(layer, Layer::Conv2D { .. });
                // Keras: fan_in = kh*kw*in_channels, fan_out = kh*kw*filters for Conv2D;
                // for Conv2DTranspose the kernel is [kh, kw, out, in], so the roles swap.
                let rf = kernel * kernel;
                let (shape, fans) = if conv {
                    (vec![kernel, kernel, c, filters], (rf * c, rf * filters))
                } else {
                    (vec![kernel, kernel, filters, c], (rf * filters, rf * c))
                };
                push_kernel_and_bias(params, &format!("{net}.{name}"), shape, fans, filters, offset)
            }
            Layer::Dense { units, .. } if is_head => {
                // Stored as one [in, 2*latent] kernel (columns: mean | log-variance) so
                // one matrix product serves both heads; each head is initialised with its
                // own Glorot limit, as two Keras Dense(latent) layers would be.
                let fan_in = inp.len();
                debug_assert_eq!(units, 2 * latent);
                params.push(ParamTensor {
                    name: format!("{net}.heads.kernel"),
                    shape: vec![fan_in, units],
                    offset,
                    len: fan_in * units,
                    glorot: Some((fan_in, latent)),
                });
                params.push(ParamTensor {
                    name: format!("{net}.heads.bias"),
                    shape: vec![units],
                    offset: offset + fan_in * units,
                    len: units,
                    glorot: None,
                });
                Some(params.len() - 2)
            }
            Layer::Dense { units, .. } => {
                let fan_in = inp.len();
                push_kernel_and_bias(params, &format!("{net}.{name}"), vec![fan_in, units], (fan_in, units), units, offset)
            }
            Layer::Flatten | Layer::Reshape { .. } => None,
        };
        out.push(LayerInfo { layer, input: inp, output: outp, name, kernel_param });
    }
    Ok(out)
}

fn push_kernel_and_bias(
    params: &mut Vec<ParamTensor>,
    prefix: &str,
    shape: Vec<usize>,
    fans: (usize, usize),
    bias: usize,
    offset: usize,
) -> Option<usize> {
    let len = shape.iter().product();
    params.push(ParamTensor { name: format!("{prefix}.kernel"), shape, offset, len, glorot: Some(fans) });
    params.push(ParamTensor { name: format!("{prefix}.bias"), shape: vec![bias], offset: offset + len, len: bias, glorot: None });
    Some(params.len() - 2)
}
