//! Shape inference and the two presets, against the reference programs' shapes.

use cvae::model::{conv_out_len, infer_shapes, Activation, KlKind, Layer, Model, Padding, Preset, Shape};

fn img(h: usize, w: usize, c: usize) -> Shape {
    Shape::Image { h, w, c }
}

#[test]
fn tensorflow_padding_rules() {
    // same: out = ceil(in/s), pad total max((out-1)s + k - in, 0), the smaller half before.
    assert_eq!(conv_out_len(28, 3, 2, Padding::Same), (14, 0)); // total 1: 0 before, 1 after
    assert_eq!(conv_out_len(28, 3, 1, Padding::Same), (28, 1));
    assert_eq!(conv_out_len(7, 3, 2, Padding::Same), (4, 1));
    assert_eq!(conv_out_len(5, 4, 1, Padding::Same), (5, 1)); // total 3: 1 before, 2 after
    assert_eq!(conv_out_len(28, 3, 2, Padding::Valid), (13, 0));
    assert_eq!(conv_out_len(13, 3, 2, Padding::Valid), (6, 0));
    assert_eq!(conv_out_len(2, 3, 1, Padding::Valid), (0, 0));
}

#[test]
fn tf_cvae_shapes() {
    let m = Model::preset(Preset::TfCvae, 50, KlKind::Mc).unwrap();
    let enc: Vec<Shape> = m.encoder.iter().map(|l| l.output).collect();
    assert_eq!(enc, vec![img(13, 13, 32), img(6, 6, 64), Shape::Flat(2304), Shape::Flat(100)]);
    let dec: Vec<Shape> = m.decoder.iter().map(|l| l.output).collect();
    assert_eq!(dec, vec![Shape::Flat(1568), img(7, 7, 32), img(14, 14, 64), img(28, 28, 32), img(28, 28, 1)]);
    // Keras's model.summary() for the TF tutorial: 249,316 + 117,217 parameters.
    assert_eq!(m.num_params, 249_316 + 117_217);
    let k = m.param("encoder.conv2d_0.kernel").unwrap();
    assert_eq!(k.shape, vec![3, 3, 1, 32]);
    assert_eq!(m.param("decoder.conv2d_transpose_0.kernel").unwrap().shape, vec![3, 3, 64, 32]);
    assert_eq!(m.param("decoder.dense_0.kernel").unwrap().shape, vec![50, 1568]);
    // The last transposed conv is stride 1, same: pad 1 on each side.
    let last = m.decoder.last().unwrap().conv_geom(1).unwrap();
    assert_eq!((last.pad_top, last.pad_left, last.out_h), (1, 1, 28));
    // The stride-2 transposed convs: pad 0 before (1 after) as TF computes it.
    let up = m.decoder[2].conv_geom(1).unwrap();
    assert_eq!((up.pad_top, up.out_h), (0, 14));
}

#[test]
fn keras_vae_shapes() {
    let m = Model::preset(Preset::KerasVae, 2, KlKind::Analytic).unwrap();
    let enc: Vec<Shape> = m.encoder.iter().map(|l| l.output).collect();
    assert_eq!(
        enc,
        vec![img(28, 28, 32), img(14, 14, 64), img(14, 14, 64), img(14, 14, 64), Shape::Flat(12544), Shape::Flat(32), Shape::Flat(4)]
    );
    let dec: Vec<Shape> = m.decoder.iter().map(|l| l.output).collect();
    assert_eq!(dec, vec![Shape::Flat(12544), img(14, 14, 64), img(28, 28, 32), img(28, 28, 1)]);
    // Keras: encoder 320+18496+36928+36928+401440+66+66, decoder 37632+18464+289.
    assert_eq!(m.num_params, 320 + 18496 + 36928 + 36928 + 401_440 + 66 + 66 + 37_632 + 18_464 + 289);
    assert_eq!(m.param("encoder.heads.kernel").unwrap().shape, vec![32, 4]);
    assert!((m.loss.recon_scale - 1.0 / 784.0).abs() < 1e-9);
    assert!((m.loss.kl_scale - 5e-4 / 2.0).abs() < 1e-9);
}

#[test]
fn params_tile_the_flat_buffer() {
    for preset in [Preset::TfCvae, Preset::KerasVae] {
        let m = Model::preset(preset, preset.default_latent(), preset.default_kl()).unwrap();
        let mut next = 0;
        for p in &m.params {
            assert_eq!(p.offset, next, "{}", p.name);
            assert_eq!(p.len, p.shape.iter().product::<usize>(), "{}", p.name);
            next += p.len;
        }
        assert_eq!(next, m.num_params);
    }
}

#[test]
fn glorot_init_is_in_range_and_seeded() {
    let m = Model::preset(Preset::TfCvae, 50, KlKind::Mc).unwrap();
    let a = m.init_params(1);
    assert_eq!(a, m.init_params(1));
    assert_ne!(a, m.init_params(2));
    for p in &m.params {
        let vals = &a[p.offset..p.offset + p.len];
        match p.glorot {
            Some((fi, fo)) => {
                let limit = (6.0 / (fi + fo) as f32).sqrt();
                assert!(vals.iter().all(|v| v.abs() <= limit), "{}", p.name);
                let max = vals.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                assert!(max > 0.5 * limit, "{}: not spread over the Glorot range", p.name);
            }
            None => assert!(vals.iter().all(|&v| v == 0.0), "{} should start at zero", p.name),
        }
    }
}

#[test]
fn bad_layer_lists_are_errors() {
    let dense_on_image = [Layer::Dense { units: 3, activation: Activation::Linear }];
    assert!(infer_shapes(&dense_on_image, img(4, 4, 1)).unwrap_err().to_string().contains("Flatten"));
    let bad_reshape = [Layer::Reshape { h: 3, w: 3, c: 3 }];
    assert!(infer_shapes(&bad_reshape, Shape::Flat(10)).is_err());
    let too_small = [Layer::Conv2D { filters: 1, kernel: 5, stride: 1, padding: Padding::Valid, activation: Activation::Linear }];
    assert!(infer_shapes(&too_small, img(3, 3, 1)).is_err());
}
