//! `cvae serve`: one local web page to watch a run train and to explore a model's
//! latent space. The page (`assets/web/`) is built into the binary. A GPU worker
//! thread decodes latent vectors through the same `Runner` the CLI uses, batching the
//! requests that wait; the queue is bounded, so a fast-moving pointer never piles up
//! work (a full queue answers 503, as does a model not loaded yet, with Retry-After; the
//! page simply asks again). HTTP is `crate::http`, a thread per connection. The run
//! folder is only ever read.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::gpu::AdapterChoice;
use crate::http::{self, Http, Reply, Request, Response};
use crate::inspect::{interp, Session, Source};
use crate::live::Live;
use crate::stats::{linspace, pca};
use crate::train::MetricsRow;

const INDEX: &str = include_str!("../assets/web/index.html");
const APP: &str = include_str!("../assets/web/app.js");

/// Most latent vectors one decode request may carry.
pub const MAX_DECODE: usize = 64;
/// Most steps of one interpolation.
pub const MAX_STEPS: usize = 32;
/// Requests waiting for the GPU worker; past this a request gets 503 (busy).
const QUEUE: usize = 8;
/// While a run trains in this process, a decode batch starts at most this often (30 a
/// second: smooth enough to follow the pointer, half of what a page asks for).
const TRAINING_PACE: Duration = Duration::from_millis(33);
/// Connections at once (a thread each, event streams included); past this, 503.
const MAX_CONNECTIONS: usize = 512;
/// Largest request body.
const MAX_BODY: u64 = 1 << 20;
/// Test images whose latent means the page plots, unless told otherwise.
pub const DEFAULT_POINTS: usize = 2000;
/// Principal directions the page offers for a latent space of more than 2 dimensions.
const DIRECTIONS: usize = 6;

pub struct ServeOptions {
    pub source: Source,
    /// Address to listen on (127.0.0.1 unless the user chose otherwise).
    pub host: String,
    /// 0 for any free port.
    pub port: u16,
    pub adapter: AdapterChoice,
    /// How many test images' latent means the page plots.
    pub points: usize,
    /// Read test images from here instead of the model's data set.
    pub data_dir: Option<PathBuf>,
    /// The run folder whose training the page shows (metrics, grids), if any.
    pub run_dir: Option<PathBuf>,
}

/// A running server; `stop` ends it (an event stream ends within a second).
pub struct Server {
    pub url: String,
    stop: Arc<AtomicBool>,
    http: Http,
    worker: Option<JoinHandle<()>>,
}

impl Server {
    /// Serve until the process ends.
    pub fn wait(mut self) {
        self.http.wait();
    }
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.http.stop();
        if let Some(t) = self.worker.take() {
            let _ = t.join();
        }
    }
}

/// What the page is told about the model, and where its test images lie.
#[derive(Clone, Serialize)]
struct ModelView {
    preset: String,
    latent: usize,
    epoch: u32,
    source: String,
    width: usize,
    height: usize,
    points: Points,
}

/// The plane of the page: z = mean + u dirs[0] + v dirs[1] (+ the sliders' multiples
/// of scales[k] dirs[k]); for a 2-D latent space, the space itself.
#[derive(Clone, Serialize)]
struct Points {
    mean: Vec<f64>,
    dirs: Vec<Vec<f64>>,
    scales: Vec<f64>,
    /// Each test image's latent mean on the plane, its label, and its mean itself.
    xy: Vec<[f32; 2]>,
    labels: Vec<u8>,
    #[serde(skip)]
    means: Vec<Vec<f32>>,
}

/// A decode for the GPU worker; the reply is the pixels, or an HTTP status and why.
enum Job {
    Decode { z: Vec<f32>, reply: Sender<Result<Vec<f32>, (u16, String)>> },
}

/// Where the model stands, for the page and for requests that need it.
#[derive(Clone)]
struct Status {
    /// What the page shows: "loading the model", "ready", or why there is none.
    text: String,
    /// Not ready *yet* (loading, or a training run with no checkpoint so far): asking
    /// again soon will do. Otherwise the run folder holds a model that does not load.
    soon: bool,
}

/// What the request threads share.
struct Shared {
    model: RwLock<Option<ModelView>>,
    /// Why there is no model yet, for the page.
    status: RwLock<Status>,
    jobs: SyncSender<Job>,
    run_dir: Option<PathBuf>,
    live: Option<Arc<Live>>,
    stop: Arc<AtomicBool>,
}

/// Start serving `opts`; `live` is the progress of a training run in this process.
pub fn start(opts: ServeOptions, live: Option<Arc<Live>>) -> Result<Server> {
    let addr = format!("{}:{}", opts.host, opts.port);
    let listener = http::listen(&addr).with_context(|| format!("cannot listen on {addr}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = sync_channel(QUEUE);
    let run_dir = opts.run_dir.clone();
    let shared = Arc::new(Shared {
        model: RwLock::new(None),
        status: RwLock::new(Status { text: "loading the model".into(), soon: true }),
        jobs: tx,
        run_dir,
        live,
        stop: stop.clone(),
    });
    let s = shared.clone();
    let worker = std::thread::spawn(move || worker(opts, s, rx));
    let limits = http::Limits { max_body: MAX_BODY, max_connections: MAX_CONNECTIONS, idle: Duration::from_secs(60) };
    let http = http::serve(listener, limits, Arc::new(move |req| handle(&shared, req)), error)?;
    Ok(Server { url: format!("http://{}/", http.addr), stop, http, worker: Some(worker) })
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(b) => Response::new(200, "application/json", b),
        Err(e) => error(500, &format!("cannot write the answer: {e}")),
    }
}

/// Seconds a client should wait before asking again after a 503.
const RETRY_AFTER: &str = "1";

/// An error the page can show: `{"error": "..."}` with the status. Every 503 (busy, or
/// not ready yet) says when to ask again.
fn error(status: u16, message: &str) -> Response {
    let body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    let r = Response::new(status, "application/json", body);
    if status == 503 {
        r.with_header("Retry-After", RETRY_AFTER)
    } else {
        r
    }
}

fn handle(shared: &Arc<Shared>, req: Request) -> Reply {
    let path = req.path.as_str();
    let resp = match (req.method.as_str(), path) {
        ("GET", "/api/events") => return events(shared.clone()),
        ("GET", "/") | ("GET", "/index.html") => Response::new(200, "text/html; charset=utf-8", INDEX.as_bytes().to_vec()),
        ("GET", "/app.js") => Response::new(200, "text/javascript; charset=utf-8", APP.as_bytes().to_vec()),
        ("GET", "/api/info") => info(shared),
        ("GET", "/api/points") => with_model(shared, |m| json(&m.points)),
        ("GET", "/api/metrics") => metrics(shared),
        ("GET", "/api/grid.png") => grid(shared),
        ("POST", "/api/decode") => decode(shared, &req.body),
        ("POST", "/api/interpolate") => interpolate(shared, &req.body),
        (
            _,
            "/" | "/index.html" | "/app.js" | "/api/info" | "/api/points" | "/api/metrics" | "/api/grid.png" | "/api/decode"
            | "/api/interpolate" | "/api/events",
        ) => error(405, &format!("{path} does not take {}", req.method)),
        _ => error(404, &format!("no page {path}")),
    };
    Reply::Whole(resp)
}

/// Why there is no model to answer with: not ready yet (loading, no checkpoint yet) is
/// 503 with Retry-After, for the client to ask again; a checkpoint that does not load
/// is 409, the state of the run folder conflicts with the request.
fn unavailable(shared: &Shared) -> (u16, String) {
    let st = shared.status.read().unwrap_or_else(|e| e.into_inner()).clone();
    (if st.soon { 503 } else { 409 }, st.text)
}

fn with_model(shared: &Shared, f: impl FnOnce(&ModelView) -> Response) -> Response {
    match shared.model.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        Some(m) => f(m),
        None => {
            let (code, why) = unavailable(shared);
            error(code, &why)
        }
    }
}

fn info(shared: &Shared) -> Response {
    let model = shared.model.read().unwrap_or_else(|e| e.into_inner());
    let view = model.as_ref().map(|m| {
        serde_json::json!({ "preset": m.preset, "latent": m.latent, "epoch": m.epoch, "source": m.source, "width": m.width, "height": m.height })
    });
    json(&serde_json::json!({
        "model": view,
        "status": shared.status.read().unwrap_or_else(|e| e.into_inner()).text.clone(),
        "training": shared.run_dir.is_some(),
        "live": shared.live.as_ref().map(|l| l.get()),
        // For `cvae load`, which watches the server's memory under load.
        "rss_bytes": crate::load::rss_bytes(),
    }))
}

/// metrics.csv of the run, every column, and the run's epoch count.
fn read_run_metrics(shared: &Shared) -> Option<(Vec<MetricsRow>, u32)> {
    let dir = shared.run_dir.as_ref()?;
    // No metrics.csv yet: no epoch is complete.
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap_or_default();
    let rows = text.lines().skip(1).filter_map(MetricsRow::parse).collect();
    let config: Option<serde_json::Value> = std::fs::read(dir.join("config.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let epochs = config.and_then(|c| c["epochs"].as_u64()).unwrap_or(0) as u32;
    Some((rows, epochs))
}

fn metrics(shared: &Shared) -> Response {
    match read_run_metrics(shared) {
        Some((rows, epochs)) => json(&serde_json::json!({ "epochs": epochs, "rows": rows, "live": shared.live.as_ref().map(|l| l.get()) })),
        None => error(404, "this server shows a model, not a run folder: no training metrics"),
    }
}

/// The newest epoch grid of the run (`image_at_epoch_NNNN.png`).
fn grid(shared: &Shared) -> Response {
    let Some(dir) = &shared.run_dir else { return error(404, "no run folder: no epoch grids") };
    let newest = crate::images::epoch_images(dir).ok().and_then(|v| v.last().cloned());
    match newest.and_then(|p| std::fs::read(p).ok()) {
        Some(b) => Response::new(200, "image/png", b),
        None => error(404, "no epoch grid yet"),
    }
}

#[derive(Deserialize)]
struct DecodeRequest {
    z: Vec<Vec<f64>>,
}

/// Check a request's latent vectors against the model; then flat f32.
fn latent_vectors(z: &[Vec<f64>], latent: usize) -> Result<Vec<f32>, String> {
    if z.is_empty() || z.len() > MAX_DECODE {
        return Err(format!("give between 1 and {MAX_DECODE} latent vectors, got {}", z.len()));
    }
    let mut flat = Vec::with_capacity(z.len() * latent);
    for (i, v) in z.iter().enumerate() {
        if v.len() != latent {
            return Err(format!("latent vector {i} has {} values; this model's latent space has {latent}", v.len()));
        }
        if let Some(x) = v.iter().find(|x| !x.is_finite() || x.abs() > 1e6) {
            return Err(format!("latent vector {i} holds {x}; values must be finite and within 1e6"));
        }
        flat.extend(v.iter().map(|&x| x as f32));
    }
    Ok(flat)
}

/// Decode on the GPU worker: queued, or 503 when the queue is full.
fn run_decode(shared: &Shared, z: Vec<f32>) -> Response {
    let (reply, answer) = channel();
    match shared.jobs.try_send(Job::Decode { z, reply }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return error(503, "the GPU is busy with earlier requests; ask again"),
        Err(TrySendError::Disconnected(_)) => return error(503, "the GPU worker has stopped"),
    }
    match answer.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(pixels)) => {
            // Three decimals are plenty for a picture and keep the answer small.
            let rounded: Vec<f64> = pixels.iter().map(|&p| (p as f64 * 1000.0).round() / 1000.0).collect();
            json(&serde_json::json!({ "images": rounded }))
        }
        Ok(Err((code, why))) => error(code, &why),
        Err(_) => error(503, "the GPU did not answer in time"),
    }
}

fn decode(shared: &Shared, body: &[u8]) -> Response {
    let req: DecodeRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(400, &format!("expected {{\"z\": [[...], ...]}}: {e}")),
    };
    let latent = shared.model.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|m| m.latent);
    match latent.map(|l| latent_vectors(&req.z, l)) {
        Some(Ok(z)) => run_decode(shared, z),
        Some(Err(e)) => error(400, &e),
        None => {
            let (code, why) = unavailable(shared);
            error(code, &why)
        }
    }
}

#[derive(Deserialize)]
struct InterpolateRequest {
    from: usize,
    to: usize,
    #[serde(default = "default_steps")]
    steps: usize,
    #[serde(default)]
    slerp: bool,
}

fn default_steps() -> usize {
    10
}

/// Decodings along the line (or great circle) between two plotted test images' means.
fn interpolate(shared: &Shared, body: &[u8]) -> Response {
    let req: InterpolateRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(400, &format!("expected {{\"from\": i, \"to\": j, \"steps\": n, \"slerp\": bool}}: {e}")),
    };
    let z = {
        let model = shared.model.read().unwrap_or_else(|e| e.into_inner());
        let Some(m) = model.as_ref() else {
            let (code, why) = unavailable(shared);
            return error(code, &why);
        };
        let n = m.points.means.len();
        if req.from >= n || req.to >= n {
            return error(400, &format!("from and to must be indices of the {n} plotted test images"));
        }
        if !(2..=MAX_STEPS).contains(&req.steps) {
            return error(400, &format!("steps must be between 2 and {MAX_STEPS}, got {}", req.steps));
        }
        let (a, b) = (&m.points.means[req.from], &m.points.means[req.to]);
        linspace(0.0, 1.0, req.steps).into_iter().flat_map(|u| interp(a, b, u as f32, req.slerp)).collect::<Vec<f32>>()
    };
    run_decode(shared, z)
}

/// Server-sent events: `metrics` when metrics.csv grows, `model` when the model
/// reloads, and `progress` every second while a run in this process trains.
fn events(shared: Arc<Shared>) -> Reply {
    Reply::Stream { mime: "text/event-stream", write: Box::new(move |w| stream_events(&shared, w)) }
}

fn stream_events(shared: &Shared, w: &mut dyn Write) {
    let (mut rows_sent, mut epoch_sent) = (usize::MAX, u32::MAX);
    while !shared.stop.load(Ordering::SeqCst) {
        let mut out = String::new();
        if let Some((rows, epochs)) = read_run_metrics(shared) {
            if rows.len() != rows_sent {
                rows_sent = rows.len();
                let data = serde_json::json!({ "epochs": epochs, "rows": rows });
                out += &format!("event: metrics\ndata: {data}\n\n");
            }
        }
        let epoch = shared.model.read().unwrap_or_else(|e| e.into_inner()).as_ref().map(|m| m.epoch);
        if let Some(e) = epoch.filter(|&e| e != epoch_sent) {
            epoch_sent = e;
            out += &format!("event: model\ndata: {{\"epoch\": {e}}}\n\n");
        }
        if let Some(p) = shared.live.as_ref().map(|l| l.get()) {
            out += &format!("event: progress\ndata: {}\n\n", serde_json::to_string(&p).unwrap_or_default());
        }
        // A comment keeps the connection alive and shows when the page has gone.
        out += ": tick\n\n";
        if w.write_all(out.as_bytes()).and_then(|_| w.flush()).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// When the source's model last changed (a run folder's checkpoint), to reload it.
fn stamp(source: &Source) -> Option<SystemTime> {
    match source {
        Source::Path(p) => {
            let f = if p.is_dir() { p.join(checkpoint::FILE) } else { p.clone() };
            std::fs::metadata(f).and_then(|m| m.modified()).ok()
        }
        Source::Pretrained(_) => None,
    }
}

/// The GPU thread: load the model (again whenever its checkpoint changes), place the
/// test images, and decode whatever the request threads queue, in batches.
fn worker(opts: ServeOptions, shared: Arc<Shared>, rx: Receiver<Job>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let seen = stamp(&opts.source);
        let session = match Session::open(&opts.source, opts.adapter.clone()) {
            Ok(s) => s,
            Err(e) => {
                *shared.status.write().unwrap_or_else(|e| e.into_inner()) = not_ready(&opts, &e);
                *shared.model.write().unwrap_or_else(|e| e.into_inner()) = None;
                if !drain_until(&shared, &rx, || stamp(&opts.source) != seen, Duration::from_secs(1)) {
                    return;
                }
                continue;
            }
        };
        if let Err(e) = serve_model(&opts, &shared, &rx, &session, seen) {
            *shared.status.write().unwrap_or_else(|e| e.into_inner()) = Status { text: format!("the model failed: {e:#}"), soon: false };
            *shared.model.write().unwrap_or_else(|e| e.into_inner()) = None;
            if !drain_until(&shared, &rx, || stamp(&opts.source) != seen, Duration::from_secs(1)) {
                return;
            }
        }
    }
}

fn not_ready(opts: &ServeOptions, e: &anyhow::Error) -> Status {
    match &opts.source {
        Source::Path(p) if !p.is_file() && !p.join(checkpoint::FILE).exists() => {
            Status { text: "no checkpoint yet: the latent space opens after the first epoch".into(), soon: true }
        }
        _ => Status { text: format!("cannot load the model: {e:#}"), soon: false },
    }
}

/// Answer jobs with an error until `done` (the source changed) or a timeout passes;
/// false when the server is stopping.
fn drain_until(shared: &Shared, rx: &Receiver<Job>, done: impl Fn() -> bool, wait: Duration) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < wait && !done() {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(Job::Decode { reply, .. }) => {
                let _ = reply.send(Err(unavailable(shared)));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return false,
        }
    }
    !shared.stop.load(Ordering::SeqCst)
}

/// Serve one version of the model until its checkpoint changes or the server stops.
fn serve_model(opts: &ServeOptions, shared: &Shared, rx: &Receiver<Job>, s: &Session, seen: Option<SystemTime>) -> Result<()> {
    let mut runner = s.runner(MAX_DECODE)?;
    let points = place_test_images(opts, s, &mut runner)?;
    let (h, w) = match s.model.image {
        crate::model::Shape::Image { h, w, .. } => (h, w),
        crate::model::Shape::Flat(n) => (1, n),
    };
    let source = match &opts.source {
        Source::Path(p) => p.display().to_string(),
        Source::Pretrained(p) => format!("built-in {} weights", p.name()),
    };
    let view =
        ModelView { preset: s.model.preset.name().into(), latent: s.model.latent, epoch: s.ck.epoch, source, width: w, height: h, points };
    *shared.model.write().unwrap_or_else(|e| e.into_inner()) = Some(view);
    *shared.status.write().unwrap_or_else(|e| e.into_inner()) = Status { text: "ready".into(), soon: false };
    let latent = s.model.latent;
    // Beside a training run in this process, decodes take turns with the training
    // steps: on a software driver (or a small GPU) every decode is time the training
    // loses, and a page following the pointer at 60 events a second cost it 7-14 %.
    let pace = if shared.live.is_some() { TRAINING_PACE } else { Duration::ZERO };
    let mut last = std::time::Instant::now() - pace;
    while !shared.stop.load(Ordering::SeqCst) {
        let first = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => {
                if stamp(&opts.source) != seen {
                    return Ok(());
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        // The batch starts a pace after the last one; what arrives meanwhile joins it.
        std::thread::sleep(pace.saturating_sub(last.elapsed()));
        last = std::time::Instant::now();
        // Whatever else waits goes into the same decode.
        let mut jobs = vec![first];
        while let Ok(j) = rx.try_recv() {
            jobs.push(j);
        }
        let z: Vec<f32> = jobs.iter().flat_map(|Job::Decode { z, .. }| z.iter().copied()).collect();
        let result = runner.decode(&z).map_err(|e| (500, format!("decoding failed: {e:#}")));
        let pixels = s.model.image.len();
        let mut at = 0;
        for Job::Decode { z, reply } in jobs {
            let n = z.len() / latent * pixels;
            let _ = reply.send(result.as_ref().map(|p| p[at..at + n].to_vec()).map_err(|e| e.clone()));
            at += n;
        }
    }
    Ok(())
}

/// The latent means of the first `opts.points` test images, on the page's plane.
fn place_test_images(opts: &ServeOptions, s: &Session, runner: &mut crate::gpu::runner::Runner<'_>) -> Result<Points> {
    let test = s.test_split(opts.data_dir.as_deref(), None)?;
    let n = opts.points.clamp(1, test.len());
    let pixels = s.model.image.len();
    let x = test.to_f32(s.ck.config.binarize);
    let enc = runner.encode(&x[..n * pixels]).context("encoding the test images")?;
    let l = s.model.latent;
    let means: Vec<Vec<f32>> = enc.chunks(2 * l).map(|r| r[..l].to_vec()).collect();
    let flat: Vec<f32> = means.iter().flatten().copied().collect();
    let (mean, dirs) = pca(&flat, l, DIRECTIONS.min(l));
    let (mean, dirs, scales) = if l == 2 {
        // The plane is the latent space itself.
        let sd = |k: usize| (means.iter().map(|m| (m[k] as f64).powi(2)).sum::<f64>() / n as f64).sqrt();
        (vec![0.0, 0.0], vec![vec![1.0, 0.0], vec![0.0, 1.0]], vec![sd(0), sd(1)])
    } else {
        (mean, dirs.iter().map(|d| d.0.clone()).collect(), dirs.iter().map(|d| d.1).collect())
    };
    let proj = |m: &[f32], d: &[f64]| m.iter().zip(&mean).zip(d).map(|((&x, mu), w)| (x as f64 - mu) * w).sum::<f64>() as f32;
    let xy = means.iter().map(|m| [proj(m, &dirs[0]), proj(m, &dirs[1])]).collect();
    Ok(Points { mean, dirs, scales, xy, labels: test.labels[..n].to_vec(), means })
}
