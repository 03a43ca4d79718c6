//! The uniform structs the launchers write, each the twin of a WGSL struct. Each
//! records its WGSL name and its fields' offsets, so `tests/naga_portability.rs`
//! holds every one to the layout naga computes for the shaders, and a launcher
//! handing a struct to an entry point that declares another is an error.

use bytemuck::{Pod, Zeroable};

/// A uniform struct shared with the shaders.
pub trait Uniform: Pod {
    /// The struct's name in the shaders.
    const WGSL: &'static str;
    /// (field name, byte offset) of every field, in order.
    fn fields() -> Vec<(&'static str, usize)>;
}

/// Defines a `#[repr(C)]` struct and its `Uniform` impl from one field list.
macro_rules! uniform {
    ($(#[$meta:meta])* $name:ident as $wgsl:literal { $($(#[$fmeta:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }
        impl Uniform for $name {
            const WGSL: &'static str = $wgsl;
            fn fields() -> Vec<(&'static str, usize)> {
                vec![$((stringify!($field), std::mem::offset_of!($name, $field)),)*]
            }
        }
    };
}

uniform! {
    /// A convolution's geometry and where its weights are (prelude.wgsl `Conv`).
    ConvUniform as "Conv" {
        batch: u32,
        in_h: u32,
        in_w: u32,
        in_c: u32,
        out_h: u32,
        out_w: u32,
        out_c: u32,
        k_h: u32,
        k_w: u32,
        stride: u32,
        pad_top: u32,
        pad_left: u32,
        w_off: u32,
        b_off: u32,
        relu: u32,
        /// Blocked kernels: add the bias (1) or not (0).
        bias: u32,
        /// Split kernel gradients: images per slice of the batch, and the slice count.
        slice_images: u32,
        slices: u32,
        /// Input-gradient kernels by phase: the residues mod stride of the fine-side
        /// rows and columns a dispatch computes.
        phase_y: u32,
        phase_x: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
        _p3: u32,
    }
}

uniform! {
    DenseUniform as "Dense" {
        batch: u32,
        inputs: u32,
        outputs: u32,
        w_off: u32,
        b_off: u32,
        relu: u32,
        _p0: u32,
        _p1: u32,
    }
}

uniform! {
    ActUniform as "Act" {
        rows: u32,
        channels: u32,
        b_off: u32,
        _p0: u32,
    }
}

uniform! {
    LossUniform as "Loss" {
        batch: u32,
        pixels: u32,
        _p0: u32,
        _p1: u32,
        /// d(loss)/d(logit) factor: recon_scale / batch.
        grad_scale: f32,
        recon_scale: f32,
        inv_batch: f32,
        _p2: f32,
    }
}

uniform! {
    KlUniform as "Kl" {
        batch: u32,
        latent: u32,
        _p0: u32,
        _p1: u32,
        /// The per-example weight of the batch mean (1 / batch).
        scale: f32,
        /// The closed-form KL's factor.
        kl_scale: f32,
        _p2: f32,
        _p3: f32,
    }
}

uniform! {
    ReparamUniform as "Reparam" {
        batch: u32,
        latent: u32,
        /// The stream's key (`Rng::key`).
        key0: u32,
        key1: u32,
        /// 1: index the noise by image (`step.batch_start` + row), 0: by row.
        by_image: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
    }
}

uniform! {
    /// Per-step values the host writes before each step's submission (prelude.wgsl `Step`).
    StepUniform as "Step" {
        /// The noise counter (training steps done so far, or the evaluation pass).
        step: u32,
        /// Where this batch starts in the epoch's shuffled order.
        batch_start: u32,
        /// Where `loss_reduce` writes this batch's loss.
        loss_slot: u32,
        /// Adam's bias-corrected step size for this step.
        alpha: f32,
    }
}

uniform! {
    OptimUniform as "Optim" {
        n: u32,
        _p0: u32,
        _p1: u32,
        _p2: u32,
        lr: f32,
        /// Adam's beta1 (unused by RMSprop).
        beta1: f32,
        /// Adam's beta2, or RMSprop's rho.
        beta2: f32,
        eps: f32,
    }
}

uniform! {
    GatherUniform as "Gather" {
        batch: u32,
        pixels: u32,
        binarize: u32,
        _p0: u32,
    }
}

/// One uniform struct's layout: WGSL name, fields with offsets, size in bytes.
pub struct Layout {
    pub wgsl: &'static str,
    pub fields: Vec<(&'static str, usize)>,
    pub size: usize,
}

fn layout<U: Uniform>() -> Layout {
    Layout { wgsl: U::WGSL, fields: U::fields(), size: std::mem::size_of::<U>() }
}

/// Every uniform struct the shaders declare, for the layout test.
pub fn layouts() -> Vec<Layout> {
    vec![
        layout::<ConvUniform>(),
        layout::<DenseUniform>(),
        layout::<ActUniform>(),
        layout::<LossUniform>(),
        layout::<KlUniform>(),
        layout::<ReparamUniform>(),
        layout::<StepUniform>(),
        layout::<OptimUniform>(),
        layout::<GatherUniform>(),
    ]
}
