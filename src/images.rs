//! Pictures: grids of digits as PNG, the animated GIF of a run, and line plots.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use image::{GrayImage, Luma, RgbImage};

use crate::atomic_write::write_atomic;

/// Encode an image as PNG and write it atomically.
pub fn save_png(path: &Path, img: &image::DynamicImage) -> Result<()> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png).with_context(|| format!("encoding {}", path.display()))?;
    write_atomic(path, bytes.get_ref())
}

/// A grid of grayscale images (values in [0, 1], strokes white on black as the
/// reference programs show them), `cols` per row, each scaled by `scale`, with
/// `gap` pixels of mid-gray between cells (0 for digits touching).
pub fn grid(images: &[f32], count: usize, h: usize, w: usize, cols: usize, scale: usize, gap: usize) -> GrayImage {
    let rows = count.div_ceil(cols);
    let cw = w * scale + gap;
    let ch = h * scale + gap;
    let mut img = GrayImage::from_pixel((cols * cw + gap) as u32, (rows * ch + gap) as u32, Luma([96]));
    for k in 0..count {
        let (r, c) = (k / cols, k % cols);
        for y in 0..h * scale {
            for x in 0..w * scale {
                let v = images[k * h * w + (y / scale) * w + x / scale].clamp(0.0, 1.0);
                img.put_pixel((gap + c * cw + x) as u32, (gap + r * ch + y) as u32, Luma([(v * 255.0).round() as u8]));
            }
        }
    }
    img
}

/// The reference program's frame choice: frame i is kept when round(2 sqrt(i))
/// grows past the last kept frame's; the last image is appended once more.
pub fn gif_frames(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut last = -1.0f64;
    for i in 0..n {
        let frame = 2.0 * (i as f64).sqrt();
        if frame.round() > last.round() {
            last = frame;
            out.push(i);
        }
    }
    if n > 0 {
        out.push(n - 1);
    }
    out
}

/// The epoch grids of a run folder (`image_at_epoch_NNNN.png`), sorted.
pub fn epoch_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("image_at_epoch_") && n.ends_with(".png")))
        .collect();
    v.sort();
    Ok(v)
}

/// An animated GIF of the epoch grids, frames chosen as the reference program does.
pub fn write_gif(dir: &Path, out: &Path) -> Result<usize> {
    let files = epoch_images(dir)?;
    if files.is_empty() {
        return Err(anyhow!("{} holds no image_at_epoch_*.png to animate", dir.display()));
    }
    let frames = gif_frames(files.len());
    let mut bytes = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new_with_speed(&mut bytes, 10);
        enc.set_repeat(image::codecs::gif::Repeat::Infinite)?;
        for &i in &frames {
            let img = image::open(&files[i]).with_context(|| format!("cannot read {}", files[i].display()))?.to_rgba8();
            let frame = image::Frame::from_parts(img, 0, 0, image::Delay::from_numer_denom_ms(400, 1));
            enc.encode_frame(frame).context("encoding the GIF")?;
        }
    }
    write_atomic(out, &bytes)?;
    Ok(frames.len())
}

static FONT: OnceLock<bool> = OnceLock::new();

/// Register the bundled DejaVu Sans with plotters (it finds no system fonts by itself).
fn font() -> Result<()> {
    let ok = *FONT.get_or_init(|| {
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, include_bytes!("../assets/fonts/DejaVuSans.ttf"))
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!("the bundled font assets/fonts/DejaVuSans.ttf did not load"))
    }
}

/// A line plot of (x, y) points with a title and axis labels, as PNG.
pub fn line_plot(path: &Path, title: &str, x_label: &str, y_label: &str, points: &[(f64, f64)]) -> Result<()> {
    use plotters::prelude::*;
    font()?;
    let (w, h) = (800u32, 500u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let (mut x0, mut x1) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (mut y0, mut y1) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
        if !x0.is_finite() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-9 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.08).max(1e-3);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|e| err(&e))?;
        // Whole-number ticks when x counts something (epochs).
        let whole = points.iter().all(|p| p.0.fract() == 0.0);
        let ticks = if whole { ((x1 - x0) as usize + 1).min(11) } else { 10 };
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_labels(ticks)
            .x_label_formatter(&|x| if whole { format!("{x:.0}") } else { format!("{x:.2}") })
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(|e| err(&e))?;
        chart.draw_series(LineSeries::new(points.iter().copied(), BLUE.stroke_width(2))).map_err(|e| err(&e))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, BLUE.filled()))).map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| anyhow!("plot buffer has the wrong size"))?;
    save_png(path, &image::DynamicImage::ImageRgb8(img))
}

/// Matplotlib's tab10 colors, one per digit class.
const TAB10: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// A scatter plot of labelled points (label 0-9), with a legend, as PNG.
pub fn scatter_plot(path: &Path, title: &str, x_label: &str, y_label: &str, points: &[(f64, f64, u8)]) -> Result<()> {
    use plotters::prelude::*;
    font()?;
    let (w, h) = (900u32, 800u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let finite: Vec<&(f64, f64, u8)> = points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        let (x0, x1) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (y0, y1) = finite.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let (x0, x1, y0, y1) = if finite.is_empty() { (-1.0, 1.0, -1.0, 1.0) } else { (x0, x1, y0, y1) };
        let (px, py) = (((x1 - x0) * 0.05).max(1e-3), ((y1 - y0) * 0.05).max(1e-3));
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))
            .map_err(|e| err(&e))?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).label_style(("sans-serif", 15)).draw().map_err(|e| err(&e))?;
        for class in 0..10u8 {
            let (r, g, b) = TAB10[class as usize];
            let color = RGBColor(r, g, b);
            chart
                .draw_series(finite.iter().filter(|p| p.2 == class).map(|p| Circle::new((p.0, p.1), 2, color.filled())))
                .map_err(|e| err(&e))?
                .label(class.to_string())
                .legend(move |(x, y)| Circle::new((x, y), 5, color.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| anyhow!("plot buffer has the wrong size"))?;
    save_png(path, &image::DynamicImage::ImageRgb8(img))
}
