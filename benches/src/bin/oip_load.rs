//! The W9/W10 load generator: the same request bodies against any HTTP
//! inference server, from `concurrency` keep-alive connections for a fixed
//! time; prints one JSON line with requests per second and latency
//! percentiles.
//!
//! `oip_load URL BODIES_FILE --concurrency 16 --seconds 10 [--warmup 2]
//! [--versions]`: `BODIES_FILE` holds one JSON request body per line, sent
//! in turn. `--versions` also reports, per `model_version` seen in the
//! answers, how many answers carried it and when it was first seen (ms
//! since the epoch), and the p99 of the answers within a second of each
//! change (W10).
//!
//! One HTTP/1.1 connection per client on a single-threaded runtime
//! (hyper's connection API): the generator shares the machine with the
//! server, so it spends as little as it can per request.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Args {
    url: hyper::Uri,
    bodies: Vec<Bytes>,
    concurrency: usize,
    seconds: f64,
    warmup: f64,
    versions: bool,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let usage = "usage: oip_load URL BODIES_FILE [--concurrency N] [--seconds S] [--warmup S] [--versions]";
    let url: hyper::Uri = it.next().ok_or(usage)?.parse().map_err(|e| format!("the URL: {e}"))?;
    let file = it.next().ok_or(usage)?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    let bodies: Vec<Bytes> =
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| Bytes::from(l.to_string())).collect();
    if bodies.is_empty() {
        return Err(format!("{file} holds no request bodies"));
    }
    let mut args = Args { url, bodies, concurrency: 1, seconds: 10.0, warmup: 1.0, versions: false };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--concurrency" => args.concurrency = value()?.parse().map_err(|e| format!("--concurrency: {e}"))?,
            "--seconds" => args.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--warmup" => args.warmup = value()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--versions" => args.versions = true,
            other => return Err(format!("unknown flag {other}; {usage}")),
        }
    }
    Ok(args)
}

/// One answer: when it came back, how long it took, whether it was 2xx,
/// and the version it named.
struct Sample {
    at: Instant,
    latency: Duration,
    ok: bool,
    version: Option<String>,
}

fn version_of(body: &[u8]) -> Option<String> {
    let key = b"\"model_version\":\"";
    let start = body.windows(key.len()).position(|w| w == key)? + key.len();
    let end = body[start..].iter().position(|b| *b == b'"')? + start;
    Some(String::from_utf8_lossy(&body[start..end]).into_owned())
}

async fn client(args: &Args, offset: usize, until: Instant, record_from: Instant) -> Result<Vec<Sample>, String> {
    let host = args.url.host().ok_or("the URL has no host")?;
    let port = args.url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut send, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    let authority = args.url.authority().map(|a| a.to_string()).unwrap_or_default();
    // Origin form (`POST /v2/... HTTP/1.1`), as clients send to a server.
    let path: hyper::Uri = args.url.path_and_query().map_or("/", |p| p.as_str()).parse().map_err(|e| format!("{e}"))?;
    let mut out = Vec::with_capacity(1 << 16);
    let mut i = offset;
    loop {
        let started = Instant::now();
        if started >= until {
            return Ok(out);
        }
        let body = args.bodies[i % args.bodies.len()].clone();
        i += 1;
        let request = hyper::Request::post(path.clone())
            .header(hyper::header::HOST, &authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        send.ready().await.map_err(|e| format!("the connection closed: {e}"))?;
        let (ok, version) = match send.send_request(request).await {
            Ok(response) => {
                let ok = response.status().is_success();
                let bytes = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                (ok, if args.versions { version_of(&bytes) } else { None })
            }
            Err(_) => (false, None),
        };
        let at = Instant::now();
        if started >= record_from {
            out.push(Sample { at, latency: at - started, ok, version });
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn main() -> std::process::ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: no runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let start = Instant::now();
    let record_from = start + Duration::from_secs_f64(args.warmup);
    let until = record_from + Duration::from_secs_f64(args.seconds);
    let local = tokio::task::LocalSet::new();
    let results = local.block_on(&runtime, async {
        let clients = (0..args.concurrency).map(|c| client(&args, c * 7, until, record_from));
        futures::future::join_all(clients).await
    });
    let mut samples = Vec::new();
    for r in results {
        match r {
            Ok(s) => samples.extend(s),
            Err(e) => {
                eprintln!("error: a client stopped: {e}");
                return std::process::ExitCode::from(1);
            }
        }
    }
    let elapsed = args.seconds;
    let failed = samples.iter().filter(|s| !s.ok).count();
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort();
    let mut line = serde_json::json!({
        "url": args.url.to_string(),
        "concurrency": args.concurrency,
        "seconds": elapsed,
        "requests": samples.len(),
        "failed": failed,
        "rps": samples.len() as f64 / elapsed,
        "p50_ms": percentile(&latencies, 50.0),
        "p99_ms": percentile(&latencies, 99.0),
    });
    if args.versions {
        samples.sort_by_key(|s| s.at);
        let epoch_ms = |at: Instant| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            (now.as_secs_f64() - Instant::now().duration_since(at).as_secs_f64()) * 1e3
        };
        let mut versions: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        let mut change_at = None;
        let mut last: Option<&str> = None;
        for s in &samples {
            let v = s.version.as_deref().unwrap_or("?");
            let entry = versions.entry(v.to_string()).or_insert((0, epoch_ms(s.at)));
            entry.0 += 1;
            if last.is_some_and(|l| l != v) && change_at.is_none() {
                change_at = Some(s.at);
            }
            last = Some(v);
        }
        line["versions"] = serde_json::json!(versions
            .iter()
            .map(|(v, (n, first))| (v.clone(), serde_json::json!({"answers": n, "first_ms": first})))
            .collect::<BTreeMap<_, _>>());
        if let Some(at) = change_at {
            let window = Duration::from_secs(1);
            let mut near: Vec<Duration> =
                samples.iter().filter(|s| s.at + window >= at && s.at <= at + window).map(|s| s.latency).collect();
            near.sort();
            line["swap_p99_ms"] = serde_json::json!(percentile(&near, 99.0));
            line["swap_requests"] = serde_json::json!(near.len());
        }
    }
    println!("{line}");
    std::process::ExitCode::SUCCESS
}
