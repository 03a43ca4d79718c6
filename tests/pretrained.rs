//! The weights built into cvae: they load and fit their models, every look-inside
//! command runs on them with no training, a parameters-only file starts a new run but
//! cannot be resumed, and `cvae eval --pretrained tf-cvae` gives the README's figure.

mod common;

use std::path::Path;

use common::{cvae, tmp_dir};
use cvae::pretrained::Pretrained;

fn ok(args: &[&str]) -> String {
    let o = cvae(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "cvae {}: exit {:?}\n{err}", args.join(" "), o.status.code());
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn shipped_weights_load_and_fit_their_models() {
    let _v = common::validated("shipped_weights_load_and_fit_their_models");
    for (p, preset, latent) in [(Pretrained::TfCvae, "tf-cvae", 50), (Pretrained::KerasVae, "keras-vae", 2)] {
        let ck = p.load().unwrap_or_else(|e| panic!("{e:#}"));
        let model = ck.config.model().unwrap();
        assert_eq!((model.preset.name(), model.latent), (preset, latent));
        assert_eq!(ck.params.len(), model.num_params, "{preset}");
        assert!(!ck.resumable && ck.slots.is_empty(), "{preset}: parameters only");
        assert!(ck.params.iter().all(|v| v.is_finite()) && ck.params.iter().any(|&v| v != 0.0), "{preset}: trained values");
    }
}

#[test]
fn look_inside_commands_run_on_the_built_in_weights() {
    let _v = common::validated("look_inside_commands_run_on_the_built_in_weights");
    let d = tmp_dir("pretrained_pictures");
    let m = d.join("manifold.png");
    ok(&["manifold", "--pretrained", "keras-vae", "--out", m.to_str().unwrap()]);
    let img = image::open(&m).unwrap();
    assert_eq!((img.width(), img.height()), (15 * 56, 15 * 56), "the Keras program's 15 x 15 manifold");
    let s = d.join("samples.png");
    ok(&["sample", "--pretrained", "tf-cvae", "--out", s.to_str().unwrap()]);
    assert!(s.is_file());
    let json = ok(&["eval", "--pretrained", "keras-vae", "--test-size", "50", "--samples", "2", "--json"]);
    let r: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(r["test_images"], 50);
    let o = cvae(&["sample"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--pretrained"), "the usage names both ways");
}

/// `cvae export` writes the parameters alone; `--resume` refuses them and says what to
/// do instead; `--init-from` starts a new run from them and records it.
#[test]
fn a_weights_file_starts_a_run_but_cannot_be_resumed() {
    let _v = common::validated("a_weights_file_starts_a_run_but_cannot_be_resumed");
    let d = tmp_dir("weights_file");
    let run = d.join("run");
    let quick = ["--train-size", "64", "--test-size", "32", "--batch-size", "32", "--latent-dim", "4", "--quiet"];
    let mut args = vec!["train", "--epochs", "1", "--out", run.to_str().unwrap()];
    args.extend(quick);
    ok(&args);
    let w = d.join("w.safetensors");
    ok(&["export", run.to_str().unwrap(), "--out", w.to_str().unwrap()]);
    let (wsize, csize) = (std::fs::metadata(&w).unwrap().len(), std::fs::metadata(run.join("checkpoint.safetensors")).unwrap().len());
    assert!(wsize * 2 < csize, "parameters alone are a third of a checkpoint: {wsize} vs {csize}");

    let o = cvae(&["train", "--resume", w.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("parameters only") && err.contains("--init-from"), "{err}");

    let fine = d.join("fine");
    let mut args = vec!["train", "--epochs", "1", "--init-from", w.to_str().unwrap(), "--out", fine.to_str().unwrap()];
    args.extend(["--train-size", "64", "--test-size", "32", "--batch-size", "32", "--quiet"]);
    ok(&args);
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fine.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["init_from"].as_str(), Some(w.to_str().unwrap()));
    assert_eq!(config["latent_dim"], 4, "the latent size comes from the weights");
    let o = cvae(&["train", "--init-from", w.to_str().unwrap(), "--latent-dim", "9", "--out", d.join("bad").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("latent 4"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The README prints what `cvae eval --pretrained tf-cvae --test-size 1000 ...` says
/// (section "`cvae eval`: what each number is"); the same command here must say the same.
/// Same seed, same images, same noise: only f32 rounding may differ (another adapter or
/// kernel family sums in another order). Each per-image figure is a sum of 784 pixel
/// terms after reductions of up to 2,304 products, so its relative error is at most
/// about 2,304 x 6e-8 = 1.4e-4; we allow 2e-4 of the value, plus 5e-4 for the README's
/// three printed decimals.
#[test]
fn eval_on_the_built_in_weights_prints_the_readme_figures() {
    let _v = common::validated("eval_on_the_built_in_weights_prints_the_readme_figures");
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start =
        readme.find("$ cvae eval --pretrained tf-cvae --test-size 1000").expect("the README shows the eval of the built-in weights");
    let block: Vec<&str> = readme[start..].lines().take_while(|l| !l.starts_with("```")).collect();
    let args: Vec<&str> = block[0].trim_start_matches("$ cvae ").split_whitespace().collect();
    let got = ok(&args);
    // "  label   -92.132 +- 0.737" -> (label, value, standard error)
    let figures = |text: &str| -> Vec<(String, f64, f64)> {
        text.lines()
            .filter_map(|l| {
                let (left, se) = l.rsplit_once(" +- ")?;
                let (label, value) = left.trim_end().rsplit_once(' ')?;
                Some((label.trim().to_string(), value.parse().ok()?, se.trim().parse().ok()?))
            })
            .collect()
    };
    let (want, have) = (figures(&block[1..].join("\n")), figures(&got));
    assert!(want.len() >= 6, "the README's block has the six figures: {want:?}");
    assert_eq!(want.len(), have.len(), "same lines:\nREADME:\n{}\ncvae:\n{got}", block.join("\n"));
    for ((label, w, wse), (hlabel, h, hse)) in want.iter().zip(&have) {
        assert_eq!(label, hlabel);
        for (what, a, b) in [("value", w, h), ("standard error", wse, hse)] {
            let tol = 2e-4 * a.abs() + 5e-4;
            assert!((a - b).abs() <= tol, "{label}, {what}: README {a}, cvae {b}, |diff| {:.2e} > {tol:.2e}", (a - b).abs());
        }
    }
}
