//! `cvae load`: a load test a user runs against their own `cvae serve`. Each client is
//! a thread that keeps one decode in flight on its own kept-alive connection, as the
//! page does while the pointer moves: when an answer comes (200, or 503 when the
//! server sheds), it asks again at the next pointer event (`hz` a second; 0: at once),
//! or after a 503 when its Retry-After says. It reports the answers by status, the latency
//! of the answered decodes (p50, p99, max), requests left without an answer, and the
//! server's memory over the run (from `/api/info`, where the server can tell it).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::rng::{Rng, Stream};

/// What `cvae load` was asked to do.
pub struct LoadOptions {
    /// The server's address, e.g. `http://127.0.0.1:8080/`.
    pub url: String,
    pub clients: usize,
    pub seconds: f64,
    /// Latent vectors per decode request.
    pub batch: usize,
    /// A request unanswered after this long counts as dropped.
    pub timeout: Duration,
    /// Pointer events a second: a client sends at most this often (0: no pause).
    pub hz: f64,
}

/// One client's record.
#[derive(Default)]
struct Tally {
    /// Milliseconds of each 200 answer.
    ok_ms: Vec<f64>,
    /// The slowest answer, whatever its status, in milliseconds.
    max_ms: f64,
    /// (status, count) of the other answers.
    other: std::collections::BTreeMap<u16, usize>,
    /// Requests that got no answer in time, or whose connection failed.
    unanswered: usize,
}

/// The figures of a load run.
pub struct LoadReport {
    pub clients: usize,
    pub batch: usize,
    pub seconds: f64,
    pub ok: usize,
    pub by_status: std::collections::BTreeMap<u16, usize>,
    pub unanswered: usize,
    /// p50, p99 and max milliseconds of the 200 answers.
    pub ok_ms: Option<(f64, f64, f64)>,
    /// The slowest answer of any status, in milliseconds.
    pub max_ms: f64,
    /// The server's resident memory in bytes: at the start, the largest seen, at the end.
    pub rss: Option<(u64, u64, u64)>,
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into()
}

/// The server's `/api/info`: the model's latent size (once it has one) and its memory.
fn info(a: &ureq::Agent, url: &str) -> Result<(Option<usize>, Option<u64>)> {
    let mut r =
        a.get(&format!("{url}api/info")).call().with_context(|| format!("no answer from {url}api/info: is `cvae serve` running there?"))?;
    let v: serde_json::Value =
        r.body_mut().read_json().with_context(|| format!("{url}api/info did not answer with JSON: not a cvae server?"))?;
    Ok((v["model"]["latent"].as_u64().map(|l| l as usize), v["rss_bytes"].as_u64()))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Run the load: wait for the server's model, then `clients` threads for `seconds`.
pub fn run(opts: &LoadOptions) -> Result<LoadReport> {
    // Seconds become a Duration, which panics on NaN, infinity or overflow.
    if opts.clients == 0 || opts.batch == 0 || !opts.seconds.is_finite() || opts.seconds <= 0.0 || opts.seconds > 1e9 {
        crate::usage!("--clients, --batch and --seconds must be above 0 (and --seconds a number of seconds)");
    }
    if !opts.url.starts_with("http://") {
        crate::usage!("{:?} is not an http:// address of a cvae server (e.g. http://127.0.0.1:8080/)", opts.url);
    }
    let url = if opts.url.ends_with('/') { opts.url.clone() } else { format!("{}/", opts.url) };
    let probe = agent(Duration::from_secs(10));
    let t0 = Instant::now();
    // A server just started may not listen yet, and loads its model (or, training,
    // waits for its first checkpoint) before it decodes.
    let latent = loop {
        match info(&probe, &url) {
            Ok((Some(l), _)) => break l,
            Err(e) if t0.elapsed() > Duration::from_secs(300) => return Err(e),
            _ if t0.elapsed() > Duration::from_secs(300) => bail!("{url} has no model after 300 s"),
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    let rss_start = info(&probe, &url)?.1;
    let deadline = Instant::now() + Duration::from_secs_f64(opts.seconds);
    let mut rss_max = rss_start;
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..opts.clients)
            .map(|c| {
                let url = &url;
                s.spawn(move || client(c, url, latent, opts, deadline))
            })
            .collect();
        // The server's memory, once a second, until the clients are done.
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(1));
            if let Ok((_, Some(r))) = info(&probe, &url) {
                rss_max = rss_max.max(Some(r));
            }
        }
        workers.into_iter().map(|w| w.join().unwrap_or_default()).collect()
    });
    let rss_end = info(&probe, &url).ok().and_then(|i| i.1);
    let mut all = Tally::default();
    for t in tallies {
        all.ok_ms.extend(t.ok_ms);
        all.max_ms = all.max_ms.max(t.max_ms);
        all.unanswered += t.unanswered;
        for (k, v) in t.other {
            *all.other.entry(k).or_default() += v;
        }
    }
    all.ok_ms.sort_by(f64::total_cmp);
    let ok_ms =
        (!all.ok_ms.is_empty()).then(|| (percentile(&all.ok_ms, 0.5), percentile(&all.ok_ms, 0.99), *all.ok_ms.last().unwrap_or(&0.0)));
    Ok(LoadReport {
        clients: opts.clients,
        batch: opts.batch,
        seconds: opts.seconds,
        ok: all.ok_ms.len(),
        by_status: all.other,
        unanswered: all.unanswered,
        ok_ms,
        max_ms: all.max_ms,
        rss: match (rss_start, rss_max, rss_end) {
            (Some(a), Some(m), Some(e)) => Some((a, m.max(e), e)),
            _ => None,
        },
    })
}

/// One client: one decode in flight until the deadline, on one connection.
fn client(c: usize, url: &str, latent: usize, opts: &LoadOptions, deadline: Instant) -> Tally {
    let a = agent(opts.timeout);
    let rng = Rng::new(c as u64);
    let mut t = Tally::default();
    let mut k = 0u32;
    let frame = if opts.hz > 0.0 { Duration::from_secs_f64(1.0 / opts.hz) } else { Duration::ZERO };
    let mut next = Instant::now();
    while Instant::now() < deadline {
        // The page asks again on the next pointer event after an answer.
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next = Instant::now() + frame;
        // Points of the latent space around the origin, different for every request.
        let z: Vec<Vec<f32>> = (0..opts.batch)
            .map(|b| (0..latent).map(|l| 4.0 * rng.uniform(Stream::Samples, k, (b * latent + l) as u32) - 2.0).collect())
            .collect();
        k += 1;
        let body = serde_json::json!({ "z": z }).to_string();
        let sent = Instant::now();
        match a.post(&format!("{url}api/decode")).header("Content-Type", "application/json").send(&body) {
            Ok(mut r) => {
                let ok = r.body_mut().read_to_vec().is_ok();
                let ms = sent.elapsed().as_secs_f64() * 1e3;
                t.max_ms = t.max_ms.max(ms);
                match (r.status().as_u16(), ok) {
                    (200, true) => t.ok_ms.push(ms),
                    (200, false) => t.unanswered += 1,
                    (code, _) => *t.other.entry(code).or_default() += 1,
                }
                // A 503 says when to ask again; the page waits that long, so does this.
                if let Some(s) = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<f64>().ok()) {
                    next = next.max(Instant::now() + Duration::from_secs_f64(s.clamp(0.0, 60.0)));
                }
            }
            Err(_) => {
                t.unanswered += 1;
                t.max_ms = t.max_ms.max(sent.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    t
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_s = |n: usize| n as f64 / self.seconds;
        writeln!(f, "{} clients for {} s, one decode in flight each, {} vector(s) a decode", self.clients, self.seconds, self.batch)?;
        let others: Vec<String> = self.by_status.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        writeln!(
            f,
            "answers: 200: {} ({:.0}/s){}{}; no answer in time: {}",
            self.ok,
            per_s(self.ok),
            if others.is_empty() { "" } else { ", " },
            others.join(", "),
            self.unanswered
        )?;
        match self.ok_ms {
            Some((p50, p99, max)) => writeln!(f, "decodes answered 200: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms")?,
            None => writeln!(f, "no decode was answered 200")?,
        }
        writeln!(f, "slowest answer of any status: {:.1} ms", self.max_ms)?;
        match self.rss {
            Some((a, m, e)) => {
                let mb = |b: u64| b as f64 / 1e6;
                write!(f, "server memory (RSS): {:.0} MB at the start, {:.0} MB at most, {:.0} MB at the end", mb(a), mb(m), mb(e))
            }
            None => write!(f, "server memory: not reported by this server's platform"),
        }
    }
}

/// The resident memory of this process in bytes, where the platform tells it (Linux).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}
