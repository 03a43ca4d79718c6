//! `cvae serve`: every endpoint with good and bad input, a run folder served while it
//! trains (and never written by the server), and the page in a real browser
//! (Debian's chromium, headless, driven through chromedriver's WebDriver API).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::tmp_dir;
use cvae::gpu::ops::Variant;
use cvae::gpu::AdapterChoice;
use cvae::inspect::Source;
use cvae::live::Live;
use cvae::model::Preset;
use cvae::pretrained::Pretrained;
use cvae::serve::{self, ServeOptions, Server};
use cvae::train::{self, RunOptions, TrainConfig};
use serde_json::{json, Value};

/// How long a lavapipe host may take to load a model and place its test images.
const LOAD: Duration = Duration::from_secs(300);

fn start(source: Source, run_dir: Option<PathBuf>, live: Option<Arc<Live>>) -> Server {
    let opts =
        ServeOptions { source, host: "127.0.0.1".into(), port: 0, adapter: AdapterChoice::Auto, points: 300, data_dir: None, run_dir };
    serve::start(opts, live).unwrap_or_else(|e| panic!("{e:#}"))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(120))).build().into()
}

/// Status, content type and body of a request (a JSON body is posted).
fn call(url: &str, method: &str, body: Option<&str>) -> (u16, String, Vec<u8>) {
    let a = agent();
    let r = match (method, body) {
        ("GET", _) => a.get(url).call(),
        ("POST", b) => a.post(url).header("Content-Type", "application/json").send(b.unwrap_or("")),
        ("PUT", b) => a.put(url).send(b.unwrap_or("")),
        (m, _) => panic!("no {m} here"),
    };
    let mut r = r.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let mime = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = r.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap();
    (r.status().as_u16(), mime, bytes)
}

fn get_json(url: &str) -> (u16, Value) {
    let (code, mime, body) = call(url, "GET", None);
    assert!(mime.starts_with("application/json"), "{url}: {mime}");
    (code, serde_json::from_slice(&body).unwrap())
}

fn post_json(url: &str, body: &str) -> (u16, Value) {
    let (code, mime, b) = call(url, "POST", Some(body));
    assert!(mime.starts_with("application/json"), "{url}: {mime}");
    (code, serde_json::from_slice(&b).unwrap())
}

/// Wait until the server has a model (`/api/info`'s model), or fail with its status.
fn wait_ready(base: &str, epoch: Option<u64>) -> Value {
    let t0 = Instant::now();
    loop {
        let (_, info) = get_json(&format!("{base}api/info"));
        if info["model"].is_object() && epoch.is_none_or(|e| info["model"]["epoch"] == e) {
            return info;
        }
        assert!(t0.elapsed() < LOAD, "the server has no model after {LOAD:?}: {info}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Status and Retry-After of a decode posted through `a` (one kept-alive connection
/// when the agent is reused, a fresh one when it is new).
fn post_with(a: &ureq::Agent, url: &str, body: &str) -> (u16, Option<String>) {
    let mut r = a.post(url).header("Content-Type", "application/json").send(body).unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
    let _ = r.body_mut().read_to_vec();
    (r.status().as_u16(), retry)
}

/// Milliseconds of one decode through `a`.
fn decode_ms(a: &ureq::Agent, base: &str) -> f64 {
    let t = Instant::now();
    let (code, _) = post_with(a, &format!("{base}api/decode"), r#"{"z": [[0.1, -0.2]]}"#);
    assert_eq!(code, 200);
    t.elapsed().as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
}

/// The median of 20 decodes, each on a connection of its own.
fn fresh_median(base: &str) -> f64 {
    median((0..20).map(|_| decode_ms(&agent(), base)).collect())
}

/// A 4xx answer whose message names what was wrong.
fn refused(base: &str, path: &str, body: &str, code: u16, says: &str) {
    let (c, v) = post_json(&format!("{base}{path}"), body);
    let msg = v["error"].as_str().unwrap_or("");
    assert_eq!(c, code, "POST {path} {body}: {v}");
    assert!(msg.contains(says), "POST {path} {body}: {msg:?} should say {says:?}");
}

#[test]
fn every_endpoint_answers_good_and_bad_requests() {
    let _v = common::validated("every_endpoint_answers_good_and_bad_requests");
    let server = start(Source::Pretrained(Pretrained::KerasVae), None, None);
    let base = server.url.clone();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    let info = wait_ready(&base, None);
    assert_eq!((info["model"]["latent"].as_u64(), info["training"].as_bool()), (Some(2), Some(false)), "{info}");

    // The page and its script come from the binary.
    let (code, mime, html) = call(&base, "GET", None);
    assert_eq!((code, mime.as_str()), (200, "text/html; charset=utf-8"));
    assert!(String::from_utf8_lossy(&html).contains("<canvas id=\"plane\""));
    let (code, mime, _) = call(&format!("{base}app.js"), "GET", None);
    assert_eq!((code, mime.as_str()), (200, "text/javascript; charset=utf-8"));

    let (code, p) = get_json(&format!("{base}api/points"));
    assert_eq!(code, 200);
    assert_eq!((p["xy"].as_array().unwrap().len(), p["labels"].as_array().unwrap().len()), (300, 300));
    assert_eq!(p["dirs"].as_array().unwrap().len(), 2, "a 2-D latent space is its own plane");

    // Decoding agrees with the CPU reference: the server rounds to 1e-3, and the
    // decoder's f32 sums (at most 3 x 3 x 64 terms per output) add far less.
    let z = [[0.0f32, 0.0], [1.5, -0.5], [-2.0, 3.0]];
    let (code, d) = post_json(&format!("{base}api/decode"), &json!({ "z": z }).to_string());
    assert_eq!(code, 200, "{d}");
    let got: Vec<f32> = d["images"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let ck = Pretrained::KerasVae.load().unwrap();
    let model = ck.config.model().unwrap();
    let flat: Vec<f32> = z.iter().flatten().copied().collect();
    let logits = cvae::cpu::vae::decode(&model, &ck.params, &flat, 3).pop().unwrap();
    let want: Vec<f32> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
    assert_eq!(got.len(), 3 * 784);
    let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-3, "decode: max abs error {worst} against the CPU reference");

    // Bad latent vectors: named, 400, and the server keeps serving.
    refused(&base, "api/decode", r#"{"z": [[0, 0, 1]]}"#, 400, "latent space has 2");
    refused(&base, "api/decode", r#"{"z": [[0, 1e9]]}"#, 400, "finite and within 1e6");
    refused(&base, "api/decode", r#"{"z": [[0, NaN]]}"#, 400, "expected");
    refused(&base, "api/decode", r#"{"z": [[0, 1e999]]}"#, 400, "expected");
    refused(&base, "api/decode", r#"{"z": []}"#, 400, "between 1 and 64");
    refused(&base, "api/decode", &json!({ "z": vec![[0.0, 0.0]; 65] }).to_string(), 400, "between 1 and 64");
    refused(&base, "api/decode", "not json", 400, "expected {\"z\"");
    refused(&base, "api/decode", r#"{"x": 1}"#, 400, "missing field `z`");
    refused(&base, "api/decode", &format!("{{\"z\": [[{}]]}}", "0,".repeat(600_000)), 413, "over 1048576 bytes");

    let (code, d) = post_json(&format!("{base}api/interpolate"), r#"{"from": 0, "to": 7, "steps": 5, "slerp": true}"#);
    assert_eq!((code, d["images"].as_array().map(Vec::len)), (200, Some(5 * 784)), "{d}");
    let (code, d) = post_json(&format!("{base}api/interpolate"), r#"{"from": 3, "to": 4}"#);
    assert_eq!((code, d["images"].as_array().map(Vec::len)), (200, Some(10 * 784)), "ten steps by default");
    refused(&base, "api/interpolate", r#"{"from": 0, "to": 300}"#, 400, "of the 300 plotted test images");
    refused(&base, "api/interpolate", r#"{"from": 0, "to": 1, "steps": 1}"#, 400, "between 2 and 32");
    refused(&base, "api/interpolate", r#"{"from": 0, "to": 1, "steps": 33}"#, 400, "between 2 and 32");
    refused(&base, "api/interpolate", r#"{"from": -1, "to": 1}"#, 400, "expected {\"from\"");

    // Wrong methods and paths; no run folder, so no training view.
    let (code, _) = get_json(&format!("{base}api/decode"));
    assert_eq!(code, 405);
    let (code, _, _) = call(&format!("{base}api/info"), "PUT", Some("{}"));
    assert_eq!(code, 405);
    let (code, v) = get_json(&format!("{base}no/such/page"));
    assert_eq!(code, 404, "{v}");
    let (code, v) = get_json(&format!("{base}api/metrics"));
    assert!(code == 404 && v["error"].as_str().unwrap().contains("not a run folder"), "{v}");
    let (code, _) = get_json(&format!("{base}api/grid.png"));
    assert_eq!(code, 404);
    let events = read_events(&base, Duration::from_secs(3));
    assert!(events.contains("event: model\ndata: {\"epoch\": "), "{events}");

    // A burst of decodes: each is answered, 200 or busy (503), never dropped.
    let threads: Vec<_> = (0..24)
        .map(|i| {
            let url = format!("{base}api/decode");
            std::thread::spawn(move || post_json(&url, &json!({ "z": vec![[i as f32 * 0.1, 0.5]; 64] }).to_string()).0)
        })
        .collect();
    let codes: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(codes.iter().all(|&c| c == 200 || c == 503) && codes.contains(&200), "{codes:?}");
    let (code, _) = post_json(&format!("{base}api/decode"), r#"{"z": [[0.5, 0.5]]}"#);
    assert_eq!(code, 200, "still serving after all of that");
    server.stop();
}

/// The server-sent events of `base` for `wait`, as text.
fn read_events(base: &str, wait: Duration) -> String {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    s.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).unwrap();
    let (mut text, mut buf, t0) = (Vec::new(), [0u8; 4096], Instant::now());
    while t0.elapsed() < wait {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream"), "{text}");
    text
}

/// Every file of a folder with its length and modification time.
fn snapshot(dir: &Path) -> Vec<(String, u64, SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (e.file_name().to_string_lossy().into_owned(), m.len(), m.modified().unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_run_folder_is_served_while_it_trains_and_never_written() {
    let _v = common::validated("a_run_folder_is_served_while_it_trains_and_never_written");
    let out = tmp_dir("serve_run");
    let live = Arc::new(Live::default());
    let server = start(Source::Path(out.clone()), Some(out.clone()), Some(live.clone()));
    let base = server.url.clone();

    // Before the first epoch: the training view is there, the model is not (yet).
    let (code, m) = get_json(&format!("{base}api/metrics"));
    assert_eq!((code, m["rows"].as_array().map(Vec::len)), (200, Some(0)), "{m}");
    let t0 = Instant::now();
    let (code, v) = loop {
        let (code, v) = get_json(&format!("{base}api/points"));
        if v["error"].as_str().is_some_and(|e| e.contains("no checkpoint yet")) || t0.elapsed() > LOAD {
            break (code, v);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Not ready yet: 503, with when to ask again.
    assert_eq!(code, 503, "{v}");
    refused(&base, "api/decode", r#"{"z": [[0, 0]]}"#, 503, "no checkpoint yet");
    assert_eq!(post_with(&agent(), &format!("{base}api/decode"), r#"{"z": [[0, 0]]}"#).1.as_deref(), Some("1"), "Retry-After");
    let (code, _) = get_json(&format!("{base}api/grid.png"));
    assert_eq!(code, 404);

    // Listen to the event stream while a small keras-vae run trains two epochs.
    let stop = Arc::new(AtomicBool::new(false));
    let (b, st) = (base.clone(), stop.clone());
    let listener = std::thread::spawn(move || {
        let mut text = String::new();
        while !st.load(Ordering::SeqCst) {
            text += &read_events(&b, Duration::from_secs(5));
        }
        text
    });
    let config = TrainConfig {
        preset: Preset::KerasVae,
        latent_dim: 2,
        batch_size: 16,
        epochs: 2,
        lr: 1e-3,
        seed: 3,
        kl: cvae::model::KlKind::Analytic,
        binarize: false,
        train_size: 200,
        test_size: 48,
        data_dir: None,
        kernels: Default::default(),
        init_from: None,
    };
    // The kernels measured for this adapter, cached with the other tests' (a forced family
    // may be a slow one: blocked took most of this test's 75 s on an AVX2-only lavapipe).
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel_cache");
    let opts = RunOptions {
        out: out.clone(),
        quiet: true,
        variant: Variant::Auto,
        kernel_cache: Some(cache),
        live: Some(live.clone()),
        ..Default::default()
    };
    train::run(config, &opts).unwrap_or_else(|e| panic!("{e:#}"));
    live.stop();
    let info = wait_ready(&base, Some(2));
    assert_eq!(info["model"]["preset"], "keras-vae");
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let events = listener.join().unwrap();

    // The numbers of metrics.csv, the newest grid, and the live progress.
    let csv = train::read_metrics(&out).unwrap();
    let (code, m) = get_json(&format!("{base}api/metrics"));
    assert_eq!((code, m["epochs"].as_u64()), (200, Some(2)));
    let rows = m["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (r, (epoch, loss, elbo)) in rows.iter().zip(&csv) {
        assert_eq!(
            (r["epoch"].as_u64(), r["train_loss"].as_f64(), r["test_elbo"].as_f64()),
            (Some(*epoch as u64), Some(*loss), Some(*elbo))
        );
    }
    let (code, mime, png) = call(&format!("{base}api/grid.png"), "GET", None);
    assert_eq!((code, mime.as_str()), (200, "image/png"));
    assert_eq!(png, std::fs::read(out.join("image_at_epoch_0002.png")).unwrap(), "the newest grid");
    assert!(events.contains("event: progress\ndata: {\"epoch\":1,\"epochs\":2,"), "progress inside epoch 1:\n{events}");
    assert!(events.contains("\"running\":false"), "the end of training:\n{events}");
    assert!(events.contains("event: metrics"), "{events}");
    assert!(events.contains("event: model\ndata: {\"epoch\": 2}"), "the model reloads after an epoch:\n{events}");

    // The server only reads: hammer it, and the folder is as training left it.
    let before = snapshot(&out);
    for path in ["api/info", "api/points", "api/metrics", "api/grid.png"] {
        assert_eq!(call(&format!("{base}{path}"), "GET", None).0, 200, "{path}");
    }
    let (code, _) = post_json(&format!("{base}api/decode"), r#"{"z": [[0.1, 0.2]]}"#);
    assert_eq!(code, 200);
    // A checkpoint that does not load (as if half-written by hand) is a 409 with the
    // reason, and the server picks the good one up again when it is back.
    let ck = out.join(cvae::checkpoint::FILE);
    let good = std::fs::read(&ck).unwrap();
    assert_eq!(snapshot(&out), before, "the server wrote into the run folder");
    std::fs::write(&ck, b"not a checkpoint").unwrap();
    let t0 = Instant::now();
    let v = loop {
        let (code, v) = get_json(&format!("{base}api/points"));
        if code == 409 || t0.elapsed() > LOAD {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(v["error"].as_str().is_some_and(|e| e.contains("cannot load the model")), "{v}");
    std::fs::write(&ck, good).unwrap();
    wait_ready(&base, Some(2));
    server.stop();
}

#[test]
fn the_command_line_refuses_a_missing_run_and_a_taken_port() {
    let _v = common::validated("the_command_line_refuses_a_missing_run_and_a_taken_port");
    let o = common::cvae_command().args(["serve", "/no/such/run"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/run does not exist"), "{}", String::from_utf8_lossy(&o.stderr));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let o = common::cvae_command().args(["serve", "--pretrained", "keras-vae", "--port", &port]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")), "{err}");
}

/// `cvae train --serve`: the URL is printed, the page shows the run, and once training
/// is over the page stays up until Ctrl-C, which then ends the process cleanly.
#[test]
fn train_serve_shows_the_run_and_keeps_serving_after_it() {
    let _v = common::validated("train_serve_shows_the_run_and_keeps_serving_after_it");
    use std::io::BufRead;
    let out = tmp_dir("serve_cli_run");
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel_cache");
    let args = ["train", "--serve", "--port", "0", "--preset", "keras-vae", "--epochs", "1", "--train-size", "64", "--test-size", "32"];
    let mut child = common::cvae_command()
        .args(args)
        .args(["--quiet", "--force", "--out", out.to_str().unwrap()])
        .env("CVAE_CACHE_DIR", cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first.strip_prefix("serving the run on ").unwrap_or_else(|| panic!("{first}")).to_string();
    let done = lines.next().unwrap().unwrap();
    assert_eq!(done, format!("training done; still serving on {url} (Ctrl-C to stop)"));
    let (code, m) = get_json(&format!("{url}api/metrics"));
    assert_eq!((code, m["rows"].as_array().map(Vec::len)), (200, Some(1)), "{m}");
    wait_ready(&url, Some(1));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
}

// ---- The page in a real browser ------------------------------------------------------

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const BROWSER_HELP: &str = "the browser test needs Debian's chromium and its WebDriver: \
    apt-get install -y chromium chromium-driver (or set CHROMIUM and CHROMEDRIVER to their paths)";

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_driver() -> Driver {
    let exe = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = free_port();
    let child = Command::new(&exe)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {exe}: {e}\n{BROWSER_HELP}"));
    let d = Driver { child, url: format!("http://127.0.0.1:{port}") };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        if let Ok(mut r) = agent().get(&format!("{}/status", d.url)).call() {
            let v: Value = r.body_mut().read_json().unwrap_or_default();
            if v["value"]["ready"] == true {
                return d;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("chromedriver did not start in 30 s\n{BROWSER_HELP}");
}

/// One WebDriver command; its `value`.
fn wd(url: &str, method: &str, body: Value) -> Value {
    let a = agent();
    let r = match method {
        "GET" => a.get(url).call(),
        "DELETE" => a.delete(url).call(),
        _ => a.post(url).send_json(&body),
    };
    let mut r = r.unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
    let code = r.status().as_u16();
    let v: Value = r.body_mut().read_json().unwrap_or_default();
    assert_eq!(code, 200, "WebDriver {method} {url}: {v}");
    v["value"].clone()
}

struct Browser {
    session: String,
    _driver: Driver,
}

impl Browser {
    fn open(profile: &Path) -> Browser {
        let driver = start_driver();
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        assert!(Path::new(&binary).exists(), "no {binary}\n{BROWSER_HELP}");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1200,1100".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": binary, "args": args }
        } } });
        let v = wd(&format!("{}/session", driver.url), "POST", caps);
        let session = format!("{}/session/{}", driver.url, v["sessionId"].as_str().expect("a session id"));
        Browser { session, _driver: driver }
    }

    fn cmd(&self, path: &str, body: Value) -> Value {
        wd(&format!("{}/{path}", self.session), "POST", body)
    }

    /// Run `js` as an async script: it ends by calling `arguments[arguments.length - 1]`.
    fn script_async(&self, js: &str) -> Value {
        self.cmd("execute/async", json!({ "script": js, "args": [] }))
    }

    fn script(&self, js: &str) -> Value {
        self.cmd("execute/sync", json!({ "script": js, "args": [] }))
    }

    /// Wait until `js` returns something other than `null`/false/"".
    fn wait_for(&self, js: &str, what: &str) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.script(js);
            if !(v.is_null() || v == false || v == "") {
                return v;
            }
            assert!(t0.elapsed() < LOAD, "the page never got {what} in {LOAD:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn element(&self, css: &str) -> Value {
        self.cmd("element", json!({ "using": "css selector", "value": css }))
    }

    /// Move the mouse to (x, y) from the centre of `element`, or click at page (x, y).
    fn pointer(&self, actions: Vec<Value>) {
        self.cmd(
            "actions",
            json!({ "actions": [{ "type": "pointer", "id": "mouse", "parameters": { "pointerType": "mouse" }, "actions": actions }] }),
        );
        wd(&format!("{}/actions", self.session), "DELETE", Value::Null);
    }

    fn screenshot(&self, element: &Value, save: &Path) -> image::GrayImage {
        let id = element[ELEMENT].as_str().unwrap_or_else(|| panic!("not an element: {element}"));
        let b64 = wd(&format!("{}/element/{id}/screenshot", self.session), "GET", Value::Null);
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
        std::fs::write(save, &png).unwrap();
        image::load_from_memory(&png).unwrap().to_luma8()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = agent().delete(&self.session).call();
    }
}

/// Wait until the digit canvas has finished every decode asked of it: its counter
/// has moved past `after` and stays put.
fn settled(b: &Browser, after: u64) -> u64 {
    let count = || b.script("return Number(document.getElementById('digit').dataset.decoded || 0)").as_u64().unwrap();
    let t0 = Instant::now();
    let mut n = count();
    while n <= after {
        assert!(t0.elapsed() < LOAD, "the digit was not decoded again");
        std::thread::sleep(Duration::from_millis(100));
        n = count();
    }
    loop {
        std::thread::sleep(Duration::from_millis(700));
        let m = count();
        if m == n {
            return n;
        }
        n = m;
    }
}

/// Fraction of pixels above a quarter of white: a drawn digit (even a blurry one)
/// lights some of the black canvas, not none of it or all.
fn lit(img: &image::GrayImage) -> f64 {
    img.pixels().filter(|p| p.0[0] > 64).count() as f64 / (img.width() * img.height()) as f64
}

#[test]
fn the_page_draws_a_digit_that_follows_the_pointer() {
    let _v = common::validated("the_page_draws_a_digit_that_follows_the_pointer");
    let dir = tmp_dir("serve_browser");
    let server = start(Source::Pretrained(Pretrained::KerasVae), None, None);
    let b = Browser::open(&dir.join("profile"));
    b.cmd("url", json!({ "url": server.url }));
    b.wait_for("return document.body.dataset.ready", "its model and test points");
    let mut n = settled(&b, 0);

    // 20 decodes from the page through fetch (the browser keeps its connection alive)
    // cost about what decodes on fresh connections do: no stall between requests.
    let page = b
        .script_async(
            "const done = arguments[arguments.length - 1];\
             (async () => { const t = [];\
               for (let i = 0; i < 20; i++) {\
                 const t0 = performance.now();\
                 const r = await fetch('/api/decode', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ z: [[0.05 * i, -0.2]] }) });\
                 await r.json(); t.push(performance.now() - t0); }\
               t.sort((a, b) => a - b); done((t[9] + t[10]) / 2); })();",
        )
        .as_f64()
        .expect("a median");
    let fresh = fresh_median(&server.url);
    eprintln!("decode median: from the page {page:.1} ms, fresh connections {fresh:.1} ms");
    assert!(page <= 3.0 * fresh, "decodes from the page take {page:.1} ms (median), fresh connections {fresh:.1} ms");

    // Two far-apart points of the plane (offsets from its centre, in CSS pixels).
    let (plane, digit) = (b.element("#plane"), b.element("#digit"));
    let (mut shots, mut where_) = (Vec::new(), Vec::new());
    for (i, (x, y)) in [(-170, 170), (170, -170)].into_iter().enumerate() {
        b.pointer(vec![json!({ "type": "pointerMove", "duration": 0, "origin": plane, "x": x, "y": y })]);
        n = settled(&b, n);
        let img = b.screenshot(&digit, &dir.join(format!("digit{i}.png")));
        where_.push(b.script("return document.getElementById('coords').textContent"));
        let f = lit(&img);
        assert!((0.02..0.7).contains(&f), "point {i}: {:.1}% of the digit canvas is lit; not a drawn digit", 100.0 * f);
        shots.push(img);
    }
    let (a, c) = (&shots[0], &shots[1]);
    assert_eq!(a.dimensions(), c.dimensions());
    let changed = a.pixels().zip(c.pixels()).filter(|(p, q)| p.0[0].abs_diff(q.0[0]) > 64).count() as f64 / (a.width() * a.height()) as f64;
    assert!(changed > 0.05, "the digit hardly changed between {where_:?} ({:.1}% of pixels)", 100.0 * changed);

    // Click two dots: the strip shows the path between them.
    let at = |i: usize| {
        b.script(&format!(
            "const c = document.getElementById('plane'), r = c.getBoundingClientRect(), [x, y] = toCanvas(c, points.xy[{i}]);\
             return [Math.round(r.left + x * r.width / c.width), Math.round(r.top + y * r.height / c.height)];"
        ))
    };
    for i in [0, 1] {
        let p = at(i);
        b.pointer(vec![
            json!({ "type": "pointerMove", "duration": 0, "origin": "viewport", "x": p[0], "y": p[1] }),
            json!({ "type": "pointerDown", "button": 0 }),
            json!({ "type": "pointerUp", "button": 0 }),
        ]);
    }
    b.wait_for("return document.getElementById('path').dataset.drawn", "the interpolation strip");
    let strip = b.screenshot(&b.element("#path"), &dir.join("path.png"));
    let f = lit(&strip);
    assert!((0.01..0.7).contains(&f), "{:.1}% of the strip is lit; no digits drawn", 100.0 * f);
    server.stop();
}

/// A decode on a kept-alive connection costs what one on a fresh connection does: the
/// response is not held back waiting for the client's acknowledgement of its head.
#[test]
fn decodes_on_a_kept_alive_connection_cost_what_fresh_ones_do() {
    let _v = common::validated("decodes_on_a_kept_alive_connection_cost_what_fresh_ones_do");
    let server = start(Source::Pretrained(Pretrained::KerasVae), None, None);
    let base = server.url.clone();
    wait_ready(&base, None);
    let kept = agent();
    decode_ms(&kept, &base);
    let k = median((0..20).map(|_| decode_ms(&kept, &base)).collect());
    let f = fresh_median(&base);
    eprintln!("decode median: kept-alive {k:.1} ms, fresh connections {f:.1} ms");
    assert!(k <= 3.0 * f, "decodes on a kept-alive connection take {k:.1} ms (median), on fresh ones {f:.1} ms");
    server.stop();
}

/// While the model loads, requests that need it are answered 503 with Retry-After
/// (ask again), never 409 (which says the request conflicts with what is there).
#[test]
fn a_burst_while_the_model_loads_gets_503_with_retry_after() {
    let _v = common::validated("a_burst_while_the_model_loads_gets_503_with_retry_after");
    let server = start(Source::Pretrained(Pretrained::KerasVae), None, None);
    let url = format!("{}api/decode", server.url);
    let answers: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
        let burst: Vec<_> = (0..20).map(|_| s.spawn(|| post_with(&agent(), &url, r#"{"z": [[0, 0]]}"#))).collect();
        burst.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (code, retry) in &answers {
        assert!(*code == 200 || (*code == 503 && retry.as_deref() == Some("1")), "{code} (Retry-After {retry:?}) in {answers:?}");
    }
    assert!(answers.iter().any(|a| a.0 == 503), "every request of the burst found the model loaded: {answers:?}");
    let (code, v) = get_json(&format!("{}api/points", server.url));
    assert!(code == 200 || (code == 503 && v["error"] == "loading the model"), "{code} {v}");
    server.stop();
}

/// `cvae load` runs clients against a server and reports answers by status, latency
/// percentiles and the server's memory (what it measures is for people, not asserted).
#[test]
fn the_load_command_reports_on_a_server() {
    let _v = common::validated("the_load_command_reports_on_a_server");
    let server = start(Source::Pretrained(Pretrained::KerasVae), None, None);
    let o = common::cvae(&["load", &server.url, "--clients", "4", "--seconds", "2"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    for says in ["4 clients for 2 s", "answers: 200: ", "no answer in time: 0", "decodes answered 200: p50 ", "server memory (RSS): "] {
        assert!(out.contains(says), "the report lacks {says:?}:\n{out}");
    }
    let o = common::cvae(&["load", "localhost:1"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    server.stop();
}
