//! Launchers: one Rust function per WGSL entry point, with the same name as the
//! entry point and as its CPU twin in `src/cpu/`. Each returns a `Dispatch` to
//! record; none of them submits. Buffers are passed by their binding names in the
//! shader; the uniform structs are in `uniforms.rs`.

use std::cell::RefCell;

use anyhow::{bail, Result};

use super::kernels::{Dispatch, Kernels};
pub use super::uniforms::StepUniform;
use super::uniforms::{ActUniform, ConvUniform, DenseUniform, GatherUniform, KlUniform, LossUniform, OptimUniform, ReparamUniform};
use super::Gpu;
use crate::model::ConvGeom;

/// llvmpipe (lavapipe) counts every loop iteration of an invocation, over all its
/// loops together, and silently stops looping after 65535. Kernels whose work grows
/// with the batch are split into slices that stay under this budget (with a margin
/// for their other loops).
pub const LOOP_BUDGET: usize = 60_000;

/// Images per batch slice so that a kernel looping over images, rows and columns
/// (images * (1 + h + h * w) iterations) stays within `LOOP_BUDGET`.
fn images_within_loop_budget(h: usize, w: usize) -> usize {
    (LOOP_BUDGET / (1 + h + h * w)).max(1)
}

/// Texels per row of every texture the subgroup kernels read (subgroup.wgsl: `texel`,
/// `texel1`), wgpu's default limit on a texture's side: texel i of a matrix or vector
/// at (i % width, i / width), the buffer's bytes in order, so a copy fills it (its rows
/// of 32 or 128 KiB are a multiple of the 256 bytes a buffer-to-texture copy needs).
pub const TEXTURE_ROW: usize = 8192;

/// One phase of a strided input gradient: its uniform (the phase set), and its input
/// pixels per image as rows x columns.
struct PhaseGrid {
    un: ConvUniform,
    rows: usize,
    cols: usize,
}

/// The phases of a strided input gradient, one dispatch each (phases with no input
/// pixels are skipped).
fn phases(g: &ConvGeom, un0: ConvUniform) -> Vec<PhaseGrid> {
    let s = g.stride;
    let all = (0..s).flat_map(|ry| (0..s).map(move |rx| (ry, rx)));
    all.map(|(ry, rx)| PhaseGrid {
        un: ConvUniform { phase_y: u(ry), phase_x: u(rx), ..un0 },
        rows: g.in_h.saturating_sub(ry).div_ceil(s),
        cols: g.in_w.saturating_sub(rx).div_ceil(s),
    })
    .filter(|ph| ph.rows * ph.cols > 0)
    .collect()
}

/// Where the subgroup family's `_thin` kernels serve a conv: one fine-side channel,
/// coarse-side channels in fours, a kernel of at most 3 x 3.
fn thin(g: &ConvGeom) -> bool {
    g.in_c == 1 && g.out_c.is_multiple_of(4) && g.k_h <= 3 && g.k_w <= 3
}

/// Whether both sides of a conv have their channels in fours, as the subgroup GEMM
/// kernels' main forms expect.
fn in_fours(g: &ConvGeom) -> bool {
    g.in_c.is_multiple_of(4) && g.out_c.is_multiple_of(4)
}

/// From this many channels on the side the lanes split, the `_wide` forms (each lane 8
/// channels, 16 vec4 columns a subgroup) fill their lanes; measured on lavapipe against
/// the 4-channel forms on the tf-cvae layers of 64 channels: 20-25% less time for the
/// forward and input gradient, 13-16% for the kernel gradient.
const WIDE_CHANNELS: usize = 64;

/// The forms of a subgroup GEMM kernel (`//#forms` in shaders/subgroup.wgsl).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    /// Channels in fours on both sides: 4 channels a lane, 32 rows a subgroup.
    Plain,
    /// As `Plain`, with 8 channels a lane (two vec4 columns) and 16 rows: from
    /// WIDE_CHANNELS on.
    Wide,
    /// Any channel counts: scalar reads and writes on a side whose channels are not in
    /// fours. Written out for every row, those doubled the time lavapipe takes to build a
    /// pipeline, so the main forms leave them out; this one serves the small layers
    /// that need them (a Dense layer reading a latent vector of 50 or 2) with a register
    /// block of 8 rows, cheap to build.
    Any,
}

impl Form {
    /// The form for conv `g`, of which the lanes split `lane_channels`.
    fn of(g: &ConvGeom, lane_channels: usize) -> Form {
        match (in_fours(g), lane_channels >= WIDE_CHANNELS) {
            (false, _) => Form::Any,
            (true, true) => Form::Wide,
            (true, false) => Form::Plain,
        }
    }

    /// The entry point of kernel `op` (`conv2d_forward_subgroup`, ...) in this form.
    fn entry(self, op: &str) -> String {
        match self {
            Form::Plain => op.to_string(),
            Form::Wide => format!("{op}_wide"),
            Form::Any => format!("{op}_any"),
        }
    }

    /// Vec4 columns a subgroup computes: 8 lanes of one vec4, or of two.
    fn cols4(self) -> usize {
        match self {
            Form::Wide => 16,
            Form::Plain | Form::Any => 8,
        }
    }

    /// Pixels a subgroup computes (the forward and the input gradient).
    fn rows(self) -> usize {
        match self {
            Form::Plain => 32,
            Form::Wide => 16,
            Form::Any => 8,
        }
    }

    /// Kernel rows a subgroup computes (the kernel gradient).
    fn kernel_rows(self) -> usize {
        match self {
            Form::Plain | Form::Wide => 32,
            Form::Any => 8,
        }
    }
}

/// The grid of a subgroup kernel over `m` pixels: 4 subgroups of `form.rows()` pixels
/// per workgroup, and the `cols4` columns in blocks of `form.cols4()`; None for the
/// narrow kernels (128 pixels, one block of at most 4 columns).
fn subgroup_grid(form: Option<Form>, cols4: usize, m: usize) -> [u32; 3] {
    match form {
        None => [u(m.div_ceil(128)), 1, 1],
        Some(f) => [u(cols4.div_ceil(f.cols4())), u(m.div_ceil(4 * f.rows())), 1],
    }
}

/// A 1-D grid of `threads` invocations in workgroups of `WORKGROUP`.
fn grid_1d(threads: usize) -> [u32; 3] {
    let groups = threads.div_ceil(super::kernels::WORKGROUP as usize).max(1);
    let max = super::kernels::MAX_GROUPS_PER_DIM as usize;
    [u(groups.min(max)), u(groups.div_ceil(max)), 1]
}

/// Sizes and offsets as the shaders see them. The trainer checks every size against
/// the device's limits before building any dispatch, so this cannot overflow there.
fn u(x: usize) -> u32 {
    u32::try_from(x).expect("tensor sizes are checked to fit in u32 before dispatch")
}

impl ConvUniform {
    pub fn new(g: &ConvGeom, w: Weights<'_>, relu: bool) -> Self {
        ConvUniform {
            batch: u(g.batch),
            in_h: u(g.in_h),
            in_w: u(g.in_w),
            in_c: u(g.in_c),
            out_h: u(g.out_h),
            out_w: u(g.out_w),
            out_c: u(g.out_c),
            k_h: u(g.k_h),
            k_w: u(g.k_w),
            stride: u(g.stride),
            pad_top: u(g.pad_top),
            pad_left: u(g.pad_left),
            w_off: u(w.w_off),
            b_off: u(w.b_off),
            relu: relu as u32,
            bias: 0,
            slice_images: u(g.batch),
            slices: 1,
            ..Default::default()
        }
    }
}

/// A layer's weights: the flat parameter buffer and where its kernel and bias start.
#[derive(Clone, Copy)]
pub struct Weights<'a> {
    pub params: &'a wgpu::Buffer,
    pub w_off: usize,
    pub b_off: usize,
}

/// Which implementation of a layer op to launch. Every family computes the same
/// thing; they differ in how they use the adapter. `src/gpu/plan.rs` picks one per
/// layer and op by measurement; forcing one uses the portable kernel wherever the
/// family does not take the shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Per layer, the family measured fastest on this adapter (cached); inside a plan,
    /// a site with no choice runs blocked where the shape allows, else portable.
    #[default]
    Auto,
    /// One output per invocation: the simplest kernels, the reference for the others.
    Portable,
    /// Register-blocked kernels (blocked.wgsl; no optional feature).
    Blocked,
    /// Subgroup broadcast and weight textures (subgroup.wgsl; 8-lane subgroups only).
    Subgroup,
    /// Workgroup-memory tiles (tiled.wgsl; no optional feature): for real GPUs.
    Tiled,
}

/// The family a launcher runs for one op, resolved from the variant and the shape.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Family {
    Portable,
    /// `vec4_in`: whether the input side's channels come in vec4s.
    Blocked {
        vec4_in: bool,
    },
    Subgroup,
    Tiled,
}

/// The launchers, bound to a device and its pipelines.
#[derive(Clone, Copy)]
pub struct Ops<'a> {
    pub gpu: &'a Gpu,
    pub k: &'a Kernels,
    pub variant: Variant,
    /// Where the subgroup kernels' activation textures are shared within one
    /// dispatch list; None packs every time.
    pub packs: Option<&'a Packs>,
}

/// The activation textures packed while one dispatch list is built: the first op that
/// reads a buffer through a texture packs it, later ops of the list with the same
/// shape read that texture (packing costs about a fifth of a training step on
/// lavapipe). Sound because no op of a network's list writes a buffer between its
/// readers: an activation is written by its layer's forward, a gradient by the layer
/// above and the ReLU mask, each before anything reads it. A list that breaks this
/// must not share a `Packs`.
#[derive(Default)]
pub struct Packs(RefCell<Vec<Packed>>);

struct Packed {
    buf: wgpu::Buffer,
    rows: usize,
    channels: usize,
    view: wgpu::TextureView,
}

impl Ops<'_> {
    /// The family for an op on conv geometry `g` (a Conv2D's; see blocked.wgsl) with
    /// its kernel at `w_off`. Blocked kernels need output channels (and the kernel) in
    /// vec4s; every other family takes any shape.
    fn family(&self, g: &ConvGeom, w_off: usize) -> Family {
        let blocked = g.out_c.is_multiple_of(4) && w_off.is_multiple_of(4);
        match self.variant {
            Variant::Portable => Family::Portable,
            Variant::Subgroup => Family::Subgroup,
            Variant::Tiled => Family::Tiled,
            Variant::Auto | Variant::Blocked if blocked => Family::Blocked { vec4_in: g.in_c.is_multiple_of(4) },
            Variant::Auto | Variant::Blocked => Family::Portable,
        }
    }

    /// The forward pass of conv geometry `g`: y = act(bias + im2col(x) kernel), by family.
    /// None for the portable family (each layer kind has its own portable kernel).
    fn gemm_forward(
        &self,
        fam: Family,
        g: &ConvGeom,
        x: &wgpu::Buffer,
        w: Weights<'_>,
        relu: bool,
        bias: bool,
        y: &wgpu::Buffer,
    ) -> Result<Option<Dispatch>> {
        Ok(Some(match fam {
            Family::Portable => return Ok(None),
            Family::Blocked { vec4_in } => self.forward_blocked(g, x, w, relu, bias, y, vec4_in)?,
            Family::Subgroup => self.forward_subgroup(g, x, w, relu, bias, y)?,
            Family::Tiled => self.forward_tiled(g, x, w, relu, bias, y)?,
        }))
    }

    /// The input gradient of conv geometry `g` (with bias and ReLU, it is a
    /// Conv2DTranspose's forward pass), by family; None for the portable family.
    #[allow(clippy::too_many_arguments)]
    fn gemm_backward_input(
        &self,
        fam: Family,
        g: &ConvGeom,
        dy: &wgpu::Buffer,
        w: Weights<'_>,
        relu: bool,
        bias: bool,
        dx: &wgpu::Buffer,
    ) -> Result<Option<Dispatch>> {
        Ok(Some(match fam {
            Family::Portable => return Ok(None),
            Family::Blocked { vec4_in } => self.backward_input_blocked(g, dy, w, relu, bias, dx, vec4_in)?,
            Family::Subgroup => self.backward_input_subgroup(g, dy, w, relu, bias, dx)?,
            Family::Tiled => self.backward_input_tiled(g, dy, w, relu, bias, dx)?,
        }))
    }

    /// The kernel gradient of conv geometry `g` into `grads` at `w_off`, by family;
    /// None where the family does not take the shape (portable, or a blocked shape).
    fn gemm_backward_kernel(
        &self,
        fam: Family,
        g: &ConvGeom,
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        grads: Weights<'_>,
    ) -> Result<Option<Dispatch>> {
        match fam {
            Family::Portable => Ok(None),
            Family::Blocked { vec4_in } => self.backward_kernel_blocked(g, x, dy, grads, vec4_in),
            Family::Subgroup => self.backward_kernel_subgroup(g, x, dy, grads).map(Some),
            Family::Tiled => self.backward_kernel_tiled(g, x, dy, grads).map(Some),
        }
    }

    /// conv2d_forward_blocked[_scalar] on conv geometry `g` (input `x`, output `y`).
    fn forward_blocked(
        &self,
        g: &ConvGeom,
        x: &wgpu::Buffer,
        w: Weights<'_>,
        relu: bool,
        bias: bool,
        y: &wgpu::Buffer,
        vec4_in: bool,
    ) -> Result<Dispatch> {
        let u = ConvUniform { bias: bias as u32, ..ConvUniform::new(g, w, relu) };
        let threads = g.batch.div_ceil(4) * g.out_h * g.out_w * g.out_c / 4;
        if vec4_in {
            self.k.dispatch(self.gpu, "conv2d_forward_blocked", &u, &[("x4", x), ("w4", w.params), ("y4", y)], threads)
        } else {
            self.k.dispatch(self.gpu, "conv2d_forward_blocked_scalar", &u, &[("x", x), ("w4", w.params), ("y4", y)], threads)
        }
    }

    /// conv2d_backward_input_blocked[_scalar] on conv geometry `g` (from `dy` to `dx`).
    fn backward_input_blocked(
        &self,
        g: &ConvGeom,
        dy: &wgpu::Buffer,
        w: Weights<'_>,
        relu: bool,
        bias: bool,
        dx: &wgpu::Buffer,
        vec4_in: bool,
    ) -> Result<Dispatch> {
        let u = ConvUniform { bias: bias as u32, ..ConvUniform::new(g, w, relu) };
        if vec4_in {
            self.k.dispatch(
                self.gpu,
                "conv2d_backward_input_blocked",
                &u,
                &[("w4", w.params), ("dy4", dy), ("dx4", dx)],
                g.batch.div_ceil(4) * g.in_h * g.in_w * g.in_c / 4,
            )
        } else {
            self.k.dispatch(
                self.gpu,
                "conv2d_backward_input_blocked_scalar",
                &u,
                &[("w4", w.params), ("dy4", dy), ("dx", dx)],
                g.batch.div_ceil(4) * g.in_h * g.in_w * g.in_c,
            )
        }
    }

    /// conv2d_backward_kernel_blocked[_scalar] on conv geometry `g`: partial sums over
    /// slices of the batch small enough to stay in cache, then their reduction in slice
    /// order. None when the shape does not fit (the scalar form needs out_c % 16 == 0).
    fn backward_kernel_blocked(
        &self,
        g: &ConvGeom,
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        grads: Weights<'_>,
        vec4_in: bool,
    ) -> Result<Option<Dispatch>> {
        if !vec4_in && !g.out_c.is_multiple_of(16) {
            return Ok(None);
        }
        const SLICE_BYTES: usize = 256 << 10;
        let per_image = 4 * (g.in_h * g.in_w * g.in_c + g.out_h * g.out_w * g.out_c);
        let images = (SLICE_BYTES / per_image).min(images_within_loop_budget(g.out_h, g.out_w)).clamp(1, g.batch);
        let d = self.sliced_and_reduced(g, grads, images, |part, u, slices| {
            let (entry, x) =
                if vec4_in { ("conv2d_backward_kernel_blocked", ("x4", x)) } else { ("conv2d_backward_kernel_blocked_scalar", ("x", x)) };
            self.k.dispatch(self.gpu, entry, u, &[x, ("dy4", dy), ("part4", part)], slices * g.kernel_len() / 16)
        })?;
        Ok(Some(d))
    }

    /// A texture holding a `rows` x 4 `cols4` matrix as rgba32float texels, row after
    /// row (`TEXTURE_ROW`).
    fn matrix_texture(&self, rows: usize, cols4: usize) -> Result<(wgpu::Texture, wgpu::TextureView)> {
        let texels = rows * cols4;
        let format = wgpu::TextureFormat::Rgba32Float;
        let max = self.gpu.limits.max_texture_dimension_2d as usize;
        let row = TEXTURE_ROW;
        // Power-of-two sides: llvmpipe compiles a kernel once per combination of its
        // textures' power-of-two-ness.
        let (width, height) = (texels.clamp(1, row).next_power_of_two(), texels.div_ceil(row).max(1).next_power_of_two());
        if height > max {
            bail!(
                "{texels} texels of {format:?} need {height} rows of {row}: more than a {max} x {max} texture holds; use a smaller batch"
            );
        }
        let tex = self.gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("matrix"),
            size: wgpu::Extent3d { width: u(width), height: u(height), depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::STORAGE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let view = tex.create_view(&Default::default());
        Ok((tex, view))
    }

    /// Copy an activation of `rows` pixels x `channels` into an rgba32float texture for
    /// the subgroup kernels, four values a texel whether or not the channels come in
    /// fours (one texture format: llvmpipe compiles a kernel once per format it reads,
    /// and a second format cost 3.9 s of compiling on a cold start). The dispatch keeps
    /// it alive. No dispatch when this list already packed it (`Packs`).
    fn texture_of(&self, buf: &wgpu::Buffer, rows: usize, channels: usize) -> Result<(Option<Dispatch>, wgpu::TextureView)> {
        let same = |p: &&Packed| p.buf == *buf && p.rows == rows && p.channels == channels;
        if let Some(hit) = self.packs.and_then(|p| p.0.borrow().iter().find(same).map(|p| p.view.clone())) {
            return Ok((None, hit));
        }
        let (d, view) = self.copied_to_texture(buf, rows, channels)?;
        if let Some(p) = self.packs {
            p.0.borrow_mut().push(Packed { buf: buf.clone(), rows, channels, view: view.clone() });
        }
        Ok((Some(d), view))
    }

    /// The backward pass of a ReLU layer's bias in the subgroup family: dy (`rows` x
    /// `channels`, channels in fours) masked in place where the layer output `y` is not
    /// positive, with partial sums of its columns over blocks of rows that bias_backward
    /// adds into `grads` at `b_off` (relu_mask_rows, reading copies of dy and y), then
    /// copied again into dy's texture, which the layer's gradient kernels read. Needs a
    /// `Packs`, whose textures those kernels read; both must run in the subgroup family.
    /// None where this does not apply (the caller masks dy in place instead).
    pub fn relu_bias_backward_subgroup(
        &self,
        rows: usize,
        channels: usize,
        y: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        b_off: usize,
    ) -> Result<Option<Dispatch>> {
        let Some(packs) = self.packs else { return Ok(None) };
        if !channels.is_multiple_of(4) {
            return Ok(None);
        }
        const RELU_ROWS: usize = 64; // subgroup.wgsl
        let blocks = rows.div_ceil(RELU_ROWS);
        let part = self.gpu.zeros("bias partial sums", blocks * channels);
        let un = ConvUniform { batch: u(rows), in_c: u(channels / 4), ..Default::default() };
        let (y_copy, y_view) = self.texture_of(y, rows, channels)?;
        let (dy_copy, dy_view) = self.copied_to_texture(dy, rows, channels)?;
        let buffers = [("dx4", dy), ("part4", &part)];
        let textures = [("dytex", &dy_view), ("xtex", &y_view)];
        let mask = self.k.dispatch_grid(self.gpu, "relu_mask_rows", &un, &buffers, &textures, grid_1d(blocks * channels / 4))?;
        let bias = self.bias_backward(blocks, channels, &part, grads, b_off)?;
        // The masked dy over the unmasked one, in the same texture (channels in fours).
        let copy = self.k.copy_to_texture(dy, dy_view.texture(), rows * channels / 4, TEXTURE_ROW)?;
        let mut list = packs.0.borrow_mut();
        list.retain(|p| p.buf != *dy);
        list.push(Packed { buf: dy.clone(), rows, channels, view: dy_view.clone() });
        let first = y_copy.into_iter().fold(dy_copy, Dispatch::then);
        Ok(Some(first.then(mask).then(copy).then(bias).keeping(part).named("relu_mask_rows")))
    }

    fn copied_to_texture(&self, buf: &wgpu::Buffer, rows: usize, channels: usize) -> Result<(Dispatch, wgpu::TextureView)> {
        // Buffers are padded to 16 bytes: the last texel's bytes exist.
        let texels = (rows * channels).div_ceil(4);
        let (tex, view) = self.matrix_texture(texels, 1)?;
        let d = self.k.copy_to_texture(buf, &tex, texels, TEXTURE_ROW)?;
        Ok((d.keeping_texture(tex), view))
    }

    /// A weight texture for the subgroup kernels, filled by `entry`: pack_weights
    /// (rows: taps x input channels) or pack_weights_transposed (taps x output channels).
    fn packed_weights(
        &self,
        entry: &str,
        un: &ConvUniform,
        w: Weights<'_>,
        rows: usize,
        cols4: usize,
    ) -> Result<(Dispatch, wgpu::TextureView)> {
        let (tex, view) = self.matrix_texture(rows, cols4)?;
        let d = self.k.dispatch_grid(self.gpu, entry, un, &[("params", w.params)], &[("wtex_out", &view)], grid_1d(rows * cols4))?;
        Ok((d.keeping_texture(tex), view))
    }

    /// conv2d_forward_subgroup on conv geometry `g`, after pack_weights fills its
    /// weight texture and a copy its input texture; conv2d_forward_narrow (the lanes
    /// splitting the input channels instead) for at most 4 output channels.
    fn forward_subgroup(
        &self,
        g: &ConvGeom,
        x: &wgpu::Buffer,
        w: Weights<'_>,
        relu: bool,
        bias: bool,
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let un = ConvUniform { bias: bias as u32, ..ConvUniform::new(g, w, relu) };
        if thin(g) {
            let grid = [u(g.out_c.div_ceil(32)), u((g.batch * g.out_h * g.out_w).div_ceil(128)), 1];
            let (copy, xview) = self.texture_of(x, g.in_len(), 1)?;
            let buffers = [("params", w.params), ("y4", y)];
            let main = self.k.dispatch_grid(self.gpu, "conv2d_forward_thin", &un, &buffers, &[("xtex", &xview)], grid)?;
            return Ok(copy.into_iter().fold(main, |d, c| d.after(c)));
        }
        let narrow = g.out_c <= 4 && g.in_c.is_multiple_of(4);
        let form = (!narrow).then(|| Form::of(g, g.out_c));
        let (entry, cols4) = match form {
            None => ("conv2d_forward_narrow".to_string(), 1),
            Some(f) => (f.entry("conv2d_forward_subgroup"), g.out_c.div_ceil(4)),
        };
        let (packw, wview) = self.packed_weights("pack_weights", &un, w, g.k_h * g.k_w * g.in_c, cols4)?;
        let (pack, xview) = self.texture_of(x, g.in_len() / g.in_c, g.in_c)?;
        let buffers = [("params", w.params), ("y4", y)];
        let grid = subgroup_grid(form, cols4, g.batch * g.out_h * g.out_w);
        let main = self.k.dispatch_grid(self.gpu, &entry, &un, &buffers, &[("wtex", &wview), ("xtex", &xview)], grid)?;
        Ok(pack.into_iter().fold(main, Dispatch::after).after(packw))
    }

    /// conv2d_backward_input_subgroup on conv geometry `g`, one dispatch per phase of
    /// the stride, after pack_weights_transposed and a copy fill its textures;
    /// conv2d_backward_input_narrow (the lanes splitting the output channels instead)
    /// for at most 4 input channels.
    fn backward_input_subgroup(
        &self,
        g: &ConvGeom,
        dy: &wgpu::Buffer,
        w: Weights<'_>,
        relu: bool,
        bias: bool,
        dx: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let thin = thin(g);
        let narrow = !thin && g.in_c <= 4 && g.out_c.is_multiple_of(4);
        let form = Form::of(g, g.in_c);
        let (entry, cols4) = match (thin, narrow) {
            (true, _) => ("conv2d_backward_input_thin".to_string(), 1),
            (_, true) => ("conv2d_backward_input_narrow".to_string(), 1),
            _ => (form.entry("conv2d_backward_input_subgroup"), g.in_c.div_ceil(4)),
        };
        let un0 = ConvUniform { bias: bias as u32, ..ConvUniform::new(g, w, relu) };
        // The thin kernel reads its weights from `params`.
        let (packw, wview) = match thin {
            true => (None, None),
            false => {
                let (p, v) = self.packed_weights("pack_weights_transposed", &un0, w, g.k_h * g.k_w * g.out_c, cols4)?;
                (Some(p), Some(v))
            }
        };
        let (pack, dyview) = self.texture_of(dy, g.out_len() / g.out_c, g.out_c)?;
        let mut d: Vec<Dispatch> = packw.into_iter().chain(pack).collect();
        let textures: Vec<_> = [("dytex", &dyview)].into_iter().chain(wview.as_ref().map(|v| ("wtex", v))).collect();
        for ph in phases(g, un0) {
            let buffers = [("params", w.params), ("dx4", dx)];
            let grid = if thin {
                // 4 x 4 pixels of the phase an invocation.
                grid_1d(g.batch * ph.rows.div_ceil(4) * ph.cols.div_ceil(4))
            } else if narrow {
                // Strips of 32 pixels of one row of the phase, 4 a workgroup.
                [u((g.batch * ph.rows * ph.cols.div_ceil(32)).div_ceil(4)), 1, 1]
            } else {
                subgroup_grid(Some(form), cols4, g.batch * ph.rows * ph.cols)
            };
            d.push(self.k.dispatch_grid(self.gpu, &entry, &ph.un, &buffers, &textures, grid)?);
        }
        let first = d.remove(0);
        Ok(d.into_iter().fold(first, Dispatch::then).named(&entry))
    }

    /// conv2d_backward_kernel_thin on conv geometry `g` (`thin`): partial sums over
    /// slices of the batch (at least 64 where the batch allows), then their reduction.
    fn backward_kernel_thin(&self, g: &ConvGeom, x: &wgpu::Buffer, dy: &wgpu::Buffer, grads: Weights<'_>) -> Result<Dispatch> {
        let plane = g.out_h * g.out_w;
        let images = g.batch.div_ceil(64).min(LOOP_BUDGET / plane).max(1);
        let (xcopy, xview) = self.texture_of(x, g.in_len(), 1)?;
        let (copy, dyview) = self.texture_of(dy, g.out_len() / g.out_c, g.out_c)?;
        let d = self.sliced_and_reduced(g, grads, images, |part, un, slices| {
            let grid = [u(g.out_c.div_ceil(32)), u(slices.div_ceil(4)), 1];
            let textures = [("xtex", &xview), ("dytex", &dyview)];
            let main = self.k.dispatch_grid(self.gpu, "conv2d_backward_kernel_thin", un, &[("part4", part)], &textures, grid)?;
            Ok(copy.into_iter().chain(xcopy).fold(main, |d, c| d.after(c)))
        })?;
        Ok(d.named("conv2d_backward_kernel_thin"))
    }

    /// conv2d_backward_kernel_subgroup on conv geometry `g`: partial sums over slices of
    /// the batch, enough of them to give every core work, then their reduction in order.
    fn backward_kernel_subgroup(&self, g: &ConvGeom, x: &wgpu::Buffer, dy: &wgpu::Buffer, grads: Weights<'_>) -> Result<Dispatch> {
        if thin(g) {
            return self.backward_kernel_thin(g, x, dy, grads);
        }
        let (rows, cols4) = (g.k_h * g.k_w * g.in_c, g.out_c.div_ceil(4));
        let form = Form::of(g, g.out_c);
        let blocks = cols4.div_ceil(form.cols4()) * rows.div_ceil(form.kernel_rows());
        // At least 128 subgroups (one per block and slice); each invocation loops over a
        // slice's pixels 8 at a time.
        let plane = g.out_h * g.out_w;
        let images = g.batch.div_ceil(128usize.div_ceil(blocks)).min(8 * LOOP_BUDGET / plane).max(1);
        let mut first: Vec<Dispatch> = Vec::new();
        let mut views = Vec::new();
        for (buf, len, channels) in [(x, g.in_len(), g.in_c), (dy, g.out_len(), g.out_c)] {
            let (pack, v) = self.texture_of(buf, len / channels, channels)?;
            first.extend(pack);
            views.push(v);
        }
        self.sliced_and_reduced(g, grads, images, |part, un, slices| {
            let textures = [("xtex", &views[0]), ("dytex", &views[1])];
            let entry = form.entry("conv2d_backward_kernel_subgroup");
            let groups = (blocks * slices).div_ceil(4);
            let main = self.k.dispatch_grid(self.gpu, &entry, un, &[("part4", part)], &textures, [u(groups), 1, 1])?;
            Ok(first.into_iter().rev().fold(main, |d, f| d.after(f)))
        })
    }

    /// conv2d_forward_tiled on conv geometry `g`: 64 x 64 output tiles.
    fn forward_tiled(&self, g: &ConvGeom, x: &wgpu::Buffer, w: Weights<'_>, relu: bool, bias: bool, y: &wgpu::Buffer) -> Result<Dispatch> {
        let un = ConvUniform { bias: bias as u32, ..ConvUniform::new(g, w, relu) };
        let grid = [u(g.out_c.div_ceil(64)), u((g.batch * g.out_h * g.out_w).div_ceil(64)), 1];
        self.k.dispatch_grid(self.gpu, "conv2d_forward_tiled", &un, &[("x4", x), ("params", w.params), ("y4", y)], &[], grid)
    }

    /// conv2d_backward_input_tiled on conv geometry `g`, one dispatch per phase of the stride.
    fn backward_input_tiled(
        &self,
        g: &ConvGeom,
        dy: &wgpu::Buffer,
        w: Weights<'_>,
        relu: bool,
        bias: bool,
        dx: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let un0 = ConvUniform { bias: bias as u32, ..ConvUniform::new(g, w, relu) };
        let mut parts = Vec::new();
        for ph in phases(g, un0) {
            let buffers = [("dy4", dy), ("params", w.params), ("dx4", dx)];
            parts.push(self.k.dispatch_grid(
                self.gpu,
                "conv2d_backward_input_tiled",
                &ph.un,
                &buffers,
                &[],
                [u(g.in_c.div_ceil(64)), u((g.batch * ph.rows * ph.cols).div_ceil(64)), 1],
            )?);
        }
        let mut it = parts.into_iter();
        let first = it.next().ok_or_else(|| anyhow::anyhow!("conv2d_backward_input_tiled: no phase has pixels"))?;
        Ok(it.fold(first, |d, n| d.then(n)))
    }

    /// conv2d_backward_kernel_tiled on conv geometry `g`: partial sums over slices of
    /// the batch, then their reduction in order.
    fn backward_kernel_tiled(&self, g: &ConvGeom, x: &wgpu::Buffer, dy: &wgpu::Buffer, grads: Weights<'_>) -> Result<Dispatch> {
        let rows = g.k_h * g.k_w * g.in_c;
        let groups = g.out_c.div_ceil(64) * rows.div_ceil(64);
        // At least 32 workgroups; an invocation's loops (about 24 iterations per 16
        // pixels) stay under llvmpipe's loop budget.
        let plane = g.out_h * g.out_w;
        let images = g.batch.div_ceil(32usize.div_ceil(groups)).min(16 * LOOP_BUDGET / 24 / plane).max(1);
        self.sliced_and_reduced(g, grads, images, |part, un, slices| {
            let grid = [u(g.out_c.div_ceil(64)), u(rows.div_ceil(64) * slices), 1];
            self.k.dispatch_grid(self.gpu, "conv2d_backward_kernel_tiled", un, &[("x4", x), ("dy4", dy), ("part4", part)], &[], grid)
        })
    }

    pub fn conv2d_forward(&self, g: &ConvGeom, x: &wgpu::Buffer, w: Weights<'_>, relu: bool, y: &wgpu::Buffer) -> Result<Dispatch> {
        let flops = 2.0 * g.macs(false) as f64;
        if let Some(d) = self.gemm_forward(self.family(g, w.w_off), g, x, w, relu, true, y)? {
            return Ok(d.with_flops(flops));
        }
        let u = ConvUniform::new(g, w, relu);
        Ok(self.k.dispatch(self.gpu, "conv2d_forward", &u, &[("x", x), ("params", w.params), ("y", y)], g.out_len())?.with_flops(flops))
    }
    pub fn conv2d_backward_input(&self, g: &ConvGeom, dy: &wgpu::Buffer, w: Weights<'_>, dx: &wgpu::Buffer) -> Result<Dispatch> {
        let flops = 2.0 * g.macs(false) as f64;
        if let Some(d) = self.gemm_backward_input(self.family(g, w.w_off), g, dy, w, false, false, dx)? {
            return Ok(d.with_flops(flops));
        }
        let u = ConvUniform::new(g, w, false);
        let buffers = [("params", w.params), ("dy", dy), ("dx", dx)];
        Ok(self.k.dispatch(self.gpu, "conv2d_backward_input", &u, &buffers, g.in_len())?.with_flops(flops))
    }
    /// Writes the kernel gradient at `w_off` of `grads` (overwriting).
    pub fn conv2d_backward_kernel(&self, g: &ConvGeom, x: &wgpu::Buffer, dy: &wgpu::Buffer, grads: Weights<'_>) -> Result<Dispatch> {
        let flops = 2.0 * g.macs(false) as f64;
        if let Some(d) = self.gemm_backward_kernel(self.family(g, grads.w_off), g, x, dy, grads)? {
            return Ok(d.with_flops(flops));
        }
        Ok(self.sliced_kernel_grad("conv2d_backward_kernel", g, (g.out_h, g.out_w), x, dy, grads)?.with_flops(flops))
    }

    /// A portable kernel gradient over slices of the batch, then their reduction.
    /// `spatial` is the rows and columns the entry point loops over per image.
    fn sliced_kernel_grad(
        &self,
        entry: &str,
        g: &ConvGeom,
        spatial: (usize, usize),
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        grads: Weights<'_>,
    ) -> Result<Dispatch> {
        let images = images_within_loop_budget(spatial.0, spatial.1).min(g.batch);
        self.sliced_and_reduced(g, grads, images, |part, u, slices| {
            self.k.dispatch(self.gpu, entry, u, &[("x", x), ("dy", dy), ("part", part)], slices * g.kernel_len())
        })
    }

    /// The kernel gradient of conv `g` into `grads` as every family computes it: `partial`
    /// (given the buffer of partial sums, the uniform and the number of slices) sums over
    /// slices of `images` images each, then conv2d_backward_kernel_reduce adds the slices
    /// in order.
    fn sliced_and_reduced(
        &self,
        g: &ConvGeom,
        grads: Weights<'_>,
        images: usize,
        partial: impl FnOnce(&wgpu::Buffer, &ConvUniform, usize) -> Result<Dispatch>,
    ) -> Result<Dispatch> {
        let slices = g.batch.div_ceil(images);
        let part = self.gpu.zeros("partial kernel gradients", slices * g.kernel_len());
        let un = ConvUniform { slice_images: u(images), slices: u(slices), ..ConvUniform::new(g, grads, false) };
        let main = partial(&part, &un, slices)?;
        let reduce_buffers = [("grads", grads.params), ("partial_sums", &part)];
        let reduce = self.k.dispatch(self.gpu, "conv2d_backward_kernel_reduce", &un, &reduce_buffers, g.kernel_len())?;
        Ok(main.then(reduce).keeping(part))
    }

    pub fn conv2d_transpose_forward(
        &self,
        g: &ConvGeom,
        x: &wgpu::Buffer,
        w: Weights<'_>,
        relu: bool,
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let (flops, gf) = (2.0 * g.macs(true) as f64, g.as_forward_conv());
        if let Some(d) = self.gemm_backward_input(self.family(&gf, w.w_off), &gf, x, w, relu, true, y)? {
            return Ok(d.with_flops(flops));
        }
        let u = ConvUniform::new(g, w, relu);
        Ok(self
            .k
            .dispatch(self.gpu, "conv2d_transpose_forward", &u, &[("x", x), ("params", w.params), ("y", y)], g.out_len())?
            .with_flops(flops))
    }
    pub fn conv2d_transpose_backward_input(&self, g: &ConvGeom, dy: &wgpu::Buffer, w: Weights<'_>, dx: &wgpu::Buffer) -> Result<Dispatch> {
        let (flops, gf) = (2.0 * g.macs(true) as f64, g.as_forward_conv());
        if let Some(d) = self.gemm_forward(self.family(&gf, w.w_off), &gf, dy, w, false, false, dx)? {
            return Ok(d.with_flops(flops));
        }
        let u = ConvUniform::new(g, w, false);
        let buffers = [("params", w.params), ("dy", dy), ("dx", dx)];
        Ok(self.k.dispatch(self.gpu, "conv2d_transpose_backward_input", &u, &buffers, g.in_len())?.with_flops(flops))
    }
    pub fn conv2d_transpose_backward_kernel(
        &self,
        g: &ConvGeom,
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        grads: Weights<'_>,
    ) -> Result<Dispatch> {
        let (flops, gf) = (2.0 * g.macs(true) as f64, g.as_forward_conv());
        // The adjoint Conv2D's input is this layer's output gradient, and the other way round.
        if let Some(d) = self.gemm_backward_kernel(self.family(&gf, grads.w_off), &gf, dy, x, grads)? {
            return Ok(d.with_flops(flops));
        }
        Ok(self.sliced_kernel_grad("conv2d_transpose_backward_kernel", g, (g.in_h, g.in_w), x, dy, grads)?.with_flops(flops))
    }

    fn dense_uniform(batch: usize, inputs: usize, outputs: usize, w: Weights<'_>, relu: bool) -> DenseUniform {
        DenseUniform {
            batch: u(batch),
            inputs: u(inputs),
            outputs: u(outputs),
            w_off: u(w.w_off),
            b_off: u(w.b_off),
            relu: relu as u32,
            ..Default::default()
        }
    }
    #[allow(clippy::too_many_arguments)]
    pub fn dense_forward(
        &self,
        batch: usize,
        inputs: usize,
        outputs: usize,
        x: &wgpu::Buffer,
        w: Weights<'_>,
        relu: bool,
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let (flops, g) = (2.0 * (batch * inputs * outputs) as f64, ConvGeom::dense(batch, inputs, outputs));
        if let Some(d) = self.gemm_forward(self.family(&g, w.w_off), &g, x, w, relu, true, y)? {
            return Ok(d.with_flops(flops));
        }
        let u = Self::dense_uniform(batch, inputs, outputs, w, relu);
        Ok(self.k.dispatch(self.gpu, "dense_forward", &u, &[("x", x), ("params", w.params), ("y", y)], batch * outputs)?.with_flops(flops))
    }
    pub fn dense_backward_input(
        &self,
        batch: usize,
        inputs: usize,
        outputs: usize,
        dy: &wgpu::Buffer,
        w: Weights<'_>,
        dx: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let (flops, g) = (2.0 * (batch * inputs * outputs) as f64, ConvGeom::dense(batch, inputs, outputs));
        if let Some(d) = self.gemm_backward_input(self.family(&g, w.w_off), &g, dy, w, false, false, dx)? {
            return Ok(d.with_flops(flops));
        }
        let u = Self::dense_uniform(batch, inputs, outputs, w, false);
        let buffers = [("params", w.params), ("dy", dy), ("dx", dx)];
        Ok(self.k.dispatch(self.gpu, "dense_backward_input", &u, &buffers, batch * inputs)?.with_flops(flops))
    }
    pub fn dense_backward_kernel(
        &self,
        batch: usize,
        inputs: usize,
        outputs: usize,
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        grads: Weights<'_>,
    ) -> Result<Dispatch> {
        let (flops, g) = (2.0 * (batch * inputs * outputs) as f64, ConvGeom::dense(batch, inputs, outputs));
        if let Some(d) = self.gemm_backward_kernel(self.family(&g, grads.w_off), &g, x, dy, grads)? {
            return Ok(d.with_flops(flops));
        }
        let u = Self::dense_uniform(batch, inputs, outputs, grads, false);
        let buffers = [("x", x), ("dy", dy), ("grads", grads.params)];
        Ok(self.k.dispatch(self.gpu, "dense_backward_kernel", &u, &buffers, inputs * outputs)?.with_flops(flops))
    }

    /// In place on `dy`: zero where the layer output `y` is not positive.
    pub fn relu_backward(&self, n: usize, y: &wgpu::Buffer, dy: &wgpu::Buffer) -> Result<Dispatch> {
        let u = ActUniform { rows: u(n), channels: 1, ..Default::default() };
        self.k.dispatch(self.gpu, "relu_backward", &u, &[("y4", y), ("dy4", dy)], n.div_ceil(4))
    }
    /// grads[b_off + c] = sum over rows of dy[row, c]; one workgroup per 4 channels
    /// (per channel when they do not come in fours).
    pub fn bias_backward(&self, rows: usize, channels: usize, dy: &wgpu::Buffer, grads: &wgpu::Buffer, b_off: usize) -> Result<Dispatch> {
        let u = ActUniform { rows: u(rows), channels: u(channels), b_off: u(b_off), ..Default::default() };
        let columns = if channels.is_multiple_of(4) { channels / 4 } else { channels };
        let buffers = [("dy4", dy), ("grads", grads)];
        // Fewer rows than a workgroup: one invocation per column, no tree (activation.wgsl).
        if rows < super::kernels::WORKGROUP as usize {
            return self.k.dispatch(self.gpu, "bias_backward_columns", &u, &buffers, columns);
        }
        self.k.dispatch_groups(self.gpu, "bias_backward", &u, &buffers, columns)
    }

    fn loss_uniform(batch: usize, pixels: usize, recon_scale: f32) -> LossUniform {
        LossUniform {
            batch: u(batch),
            pixels: u(pixels),
            grad_scale: recon_scale / batch as f32,
            recon_scale,
            inv_batch: 1.0 / batch as f32,
            ..Default::default()
        }
    }
    /// One workgroup per example.
    pub fn sigmoid_cross_entropy_forward(
        &self,
        batch: usize,
        pixels: usize,
        logits: &wgpu::Buffer,
        targets: &wgpu::Buffer,
        ce: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = Self::loss_uniform(batch, pixels, 1.0);
        self.k.dispatch_groups(
            self.gpu,
            "sigmoid_cross_entropy_forward",
            &u,
            &[("logits", logits), ("targets", targets), ("ce", ce)],
            batch,
        )
    }
    /// dlogits = recon_scale / batch * (sigmoid(logits) - targets).
    pub fn sigmoid_cross_entropy_backward(
        &self,
        batch: usize,
        pixels: usize,
        recon_scale: f32,
        logits: &wgpu::Buffer,
        targets: &wgpu::Buffer,
        dlogits: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = Self::loss_uniform(batch, pixels, recon_scale);
        self.k.dispatch(
            self.gpu,
            "sigmoid_cross_entropy_backward",
            &u,
            &[("logits", logits), ("targets", targets), ("dlogits", dlogits)],
            batch * pixels,
        )
    }
    /// losses[step.loss_slot] = mean over examples of recon_scale * ce + kl.
    pub fn loss_reduce(
        &self,
        batch: usize,
        recon_scale: f32,
        ce: &wgpu::Buffer,
        kl: &wgpu::Buffer,
        losses: &wgpu::Buffer,
        step: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = Self::loss_uniform(batch, 1, recon_scale);
        self.k.dispatch_groups(self.gpu, "loss_reduce", &u, &[("ce", ce), ("kl", kl), ("losses", losses), ("step", step)], 1)
    }

    fn kl_uniform(batch: usize, latent: usize, scale: f32, kl_scale: f32) -> KlUniform {
        KlUniform { batch: u(batch), latent: u(latent), scale, kl_scale, ..Default::default() }
    }
    pub fn kl_mc_forward(&self, batch: usize, latent: usize, enc: &wgpu::Buffer, z: &wgpu::Buffer, kl: &wgpu::Buffer) -> Result<Dispatch> {
        let u = Self::kl_uniform(batch, latent, 0.0, 0.0);
        self.k.dispatch(self.gpu, "kl_mc_forward", &u, &[("enc", enc), ("z", z), ("kl", kl)], batch)
    }
    #[allow(clippy::too_many_arguments)]
    pub fn kl_mc_backward(
        &self,
        batch: usize,
        latent: usize,
        scale: f32,
        dz: &wgpu::Buffer,
        enc: &wgpu::Buffer,
        eps: &wgpu::Buffer,
        z: &wgpu::Buffer,
        denc: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = Self::kl_uniform(batch, latent, scale, 0.0);
        self.k.dispatch(self.gpu, "kl_mc_backward", &u, &[("enc", enc), ("z", z), ("eps", eps), ("dz", dz), ("denc", denc)], batch * latent)
    }
    pub fn kl_analytic_forward(
        &self,
        batch: usize,
        latent: usize,
        kl_scale: f32,
        enc: &wgpu::Buffer,
        kl: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = Self::kl_uniform(batch, latent, 0.0, kl_scale);
        self.k.dispatch(self.gpu, "kl_analytic_forward", &u, &[("enc", enc), ("kl", kl)], batch)
    }
    #[allow(clippy::too_many_arguments)]
    pub fn kl_analytic_backward(
        &self,
        batch: usize,
        latent: usize,
        kl_scale: f32,
        scale: f32,
        dz: &wgpu::Buffer,
        enc: &wgpu::Buffer,
        eps: &wgpu::Buffer,
        denc: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = Self::kl_uniform(batch, latent, scale, kl_scale);
        self.k.dispatch(self.gpu, "kl_analytic_backward", &u, &[("enc", enc), ("eps", eps), ("dz", dz), ("denc", denc)], batch * latent)
    }

    /// z and eps for step `step.step` of the stream with key `key` (see `Rng::key`),
    /// the noise indexed by row, or with `by_image` by image (`Rng::image_normals`).
    #[allow(clippy::too_many_arguments)]
    pub fn reparameterize(
        &self,
        batch: usize,
        latent: usize,
        key: [u32; 2],
        enc: &wgpu::Buffer,
        step: &wgpu::Buffer,
        z: &wgpu::Buffer,
        eps: &wgpu::Buffer,
        by_image: bool,
    ) -> Result<Dispatch> {
        let u = ReparamUniform {
            batch: u(batch),
            latent: u(latent),
            key0: key[0],
            key1: key[1],
            by_image: by_image as u32,
            ..Default::default()
        };
        self.k.dispatch(self.gpu, "reparameterize", &u, &[("enc", enc), ("z", z), ("eps", eps), ("step", step)], batch * latent)
    }
    /// The raw RNG stream (bits as 4 x u32 and normals) of indices 0..n, for tests.
    pub fn rng_stream(
        &self,
        n: usize,
        key: [u32; 2],
        step: &wgpu::Buffer,
        bits: &wgpu::Buffer,
        normals: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = ReparamUniform { batch: u(n), latent: 1, key0: key[0], key1: key[1], ..Default::default() };
        self.k.dispatch(self.gpu, "rng_stream", &u, &[("eps", normals), ("bits", bits), ("step", step)], n)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn adam_update(
        &self,
        n: usize,
        beta1: f32,
        beta2: f32,
        eps: f32,
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        m: &wgpu::Buffer,
        v: &wgpu::Buffer,
        step: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = OptimUniform { n: u(n), lr: 0.0, beta1, beta2, eps, ..Default::default() };
        self.k.dispatch(
            self.gpu,
            "adam_update",
            &u,
            &[("params", params), ("grads", grads), ("m", m), ("v", v), ("step", step)],
            n.div_ceil(4),
        )
    }
    #[allow(clippy::too_many_arguments)]
    pub fn rmsprop_update(
        &self,
        n: usize,
        lr: f32,
        rho: f32,
        eps: f32,
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        v: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = OptimUniform { n: u(n), lr, beta1: 0.0, beta2: rho, eps, ..Default::default() };
        self.k.dispatch(self.gpu, "rmsprop_update", &u, &[("params", params), ("grads", grads), ("v", v)], n.div_ceil(4))
    }

    /// x = the preprocessed images order[step.batch_start ..][..batch] of the packed byte set.
    #[allow(clippy::too_many_arguments)]
    pub fn gather_images(
        &self,
        batch: usize,
        pixels: usize,
        binarize: bool,
        images: &wgpu::Buffer,
        order: &wgpu::Buffer,
        step: &wgpu::Buffer,
        x: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let u = GatherUniform { batch: u(batch), pixels: u(pixels), binarize: binarize as u32, ..Default::default() };
        self.k.dispatch(self.gpu, "gather_images", &u, &[("images", images), ("order", order), ("x", x), ("step", step)], batch * pixels)
    }
}
