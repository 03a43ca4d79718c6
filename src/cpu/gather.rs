//! Gathering a batch from the data set and preprocessing it. Twin of `shaders/gather.wgsl`.

use crate::data::preprocess;

/// x[b, i] = preprocess(pixel i of image order[batch_start + b]).
pub fn gather_images(images: &[u8], order: &[u32], batch_start: usize, batch: usize, pixels: usize, binarize: bool) -> Vec<f32> {
    order[batch_start..batch_start + batch]
        .iter()
        .flat_map(|&n| images[n as usize * pixels..(n as usize + 1) * pixels].iter().map(move |&b| preprocess(b, binarize)))
        .collect()
}
