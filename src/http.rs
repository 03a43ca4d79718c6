//! The HTTP/1.1 of `cvae serve`: one thread per connection, kept alive between
//! requests, request bodies by Content-Length, each response written in one `write`
//! on a socket with TCP_NODELAY. Small on purpose: the server answers a page on the
//! same machine or network, a few endpoints, JSON and PNG.
//!
//! Why not a crate: tiny_http, used before, queued a new connection for a pool thread
//! that was not really waiting when many clients connected at once, and each pool
//! thread serves one kept-alive connection for its whole life, so such a connection
//! was never read (requests left unanswered under load).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// A request as the handlers see it.
pub struct Request {
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    pub body: Vec<u8>,
}

/// A whole response.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, mime: &str, body: Vec<u8>) -> Response {
        Response { status, headers: vec![("Content-Type", mime.to_string()), ("Cache-Control", "no-store".into())], body }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Response {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// What a handler answers: a response, after which the connection waits for the next
/// request, or a stream (server-sent events) of this type: its head is written here,
/// then `write` writes the body until it returns, and the connection closes.
pub enum Reply {
    Whole(Response),
    Stream { mime: &'static str, write: Streamer },
}

/// What writes an event stream to the connection.
pub type Streamer = Box<dyn FnOnce(&mut dyn Write) + Send>;

/// What happens to a request: the handler, and the answer to a request the server
/// refuses before the handler sees it (a body too large, too many connections).
pub type Handler = Arc<dyn Fn(Request) -> Reply + Send + Sync>;
pub type Refusal = fn(u16, &str) -> Response;

/// Limits of one server.
#[derive(Clone, Copy)]
pub struct Limits {
    /// Largest request body accepted.
    pub max_body: u64,
    /// Connections at once; past this a new one is answered 503 and closed.
    pub max_connections: usize,
    /// An idle kept-alive connection closes after this long.
    pub idle: Duration,
}

/// A running server: its address, and the flag and thread that `stop` ends.
pub struct Http {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// A listening socket whose connections send every write at once (TCP_NODELAY, which
/// accepted sockets inherit from the listener on Linux, the BSDs, macOS and Windows):
/// with Nagle's algorithm, a write that follows another waited for the client's
/// delayed ACK, about 40 ms on a kept-alive connection.
pub fn listen(addr: &str) -> Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::ToSocketAddrs;
    let mut last = None;
    for a in addr.to_socket_addrs().with_context(|| format!("{addr} is not a host:port"))? {
        let socket = Socket::new(Domain::for_address(a), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_tcp_nodelay(true)?;
        // As std's TcpListener::bind: a restarted server may take its port back at once.
        #[cfg(unix)]
        socket.set_reuse_address(true)?;
        // Room for many clients connecting at once (the kernel caps it at somaxconn).
        match socket.bind(&a.into()).and_then(|_| socket.listen(1024)) {
            Ok(()) => return Ok(socket.into()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| anyhow!("{addr} names no address"), |e| e.into()))
}

/// Serve `listener` with `handler` until `stop`.
pub fn serve(listener: TcpListener, limits: Limits, handler: Handler, refuse: Refusal) -> Result<Http> {
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let open = Arc::new(AtomicUsize::new(0));
    let s = stop.clone();
    let accept = std::thread::spawn(move || {
        for conn in listener.incoming() {
            if s.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = conn else { continue };
            if open.fetch_add(1, Ordering::SeqCst) >= limits.max_connections {
                open.fetch_sub(1, Ordering::SeqCst);
                let _ = write_response(&stream, &refuse(503, "too many connections at once; try again"), true);
                continue;
            }
            let (h, open, stop) = (handler.clone(), open.clone(), s.clone());
            std::thread::spawn(move || {
                connection(stream, limits, &h, refuse, &stop);
                open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Ok(Http { addr, stop, accept: Some(accept) })
}

impl Http {
    /// Stop accepting (open connections end with their next request or idle timeout).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The accept loop blocks in accept(): a connection of our own wakes it (to
        // loopback when listening on every address, which not every OS connects to).
        let mut to = self.addr;
        if to.ip().is_unspecified() {
            to.set_ip(if to.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        let _ = TcpStream::connect_timeout(&to, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }

    /// Block until the server stops.
    pub fn wait(&mut self) {
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Requests of one connection, one after another, until it closes, idles out, asks to
/// close or sends something that is not HTTP/1.x.
fn connection(stream: TcpStream, limits: Limits, handler: &Handler, refuse: Refusal, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(limits.idle));
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(read_half);
    while !stop.load(Ordering::SeqCst) {
        let req = match read_request(&mut reader, &stream, limits.max_body) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err((status, why)) => {
                let _ = write_response(&stream, &refuse(status, &why), true);
                drain(&stream, &mut reader);
                return;
            }
        };
        let close = req.1;
        match handler(req.0) {
            Reply::Whole(r) => {
                if write_response(&stream, &r, close).is_err() || close {
                    return;
                }
            }
            Reply::Stream { mime, write } => {
                let head = Response::new(200, mime, Vec::new());
                let mut w = &stream;
                if w.write_all(&head_bytes(&head, None, true)).and_then(|_| w.flush()).is_ok() {
                    write(&mut w);
                }
                return;
            }
        }
    }
}

/// After refusing a request (a body too large, say) the client may still be sending:
/// closing now would reset the connection before it reads the answer. Say that no
/// more will come, then read and drop what arrives, for a while.
fn drain(stream: &TcpStream, reader: &mut BufReader<TcpStream>) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = std::io::copy(&mut reader.by_ref().take(64 << 20), &mut std::io::sink());
}

/// A line of the request head, without its CRLF; None at the end of the stream.
fn head_line(reader: &mut BufReader<TcpStream>) -> Result<Option<String>, (u16, String)> {
    let mut line = Vec::new();
    // 8 KiB per line is far more than any request of the page needs.
    let n = reader.by_ref().take(8192).read_until(b'\n', &mut line).map_err(|e| (400, format!("cannot read the request: {e}")))?;
    if n == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") {
        return Err((431, "a request line or header is over 8 KiB".into()));
    }
    let s = String::from_utf8(line).map_err(|_| (400, "the request head is not UTF-8".to_string()))?;
    Ok(Some(s.trim_end_matches(['\r', '\n']).to_string()))
}

/// The next request and whether the connection closes after it; None when the client
/// has closed (or idled out) between requests.
fn read_request(reader: &mut BufReader<TcpStream>, stream: &TcpStream, max_body: u64) -> Result<Option<(Request, bool)>, (u16, String)> {
    // Stray CRLFs between requests are allowed (RFC 9112, 2.2), a few of them.
    let mut first = String::new();
    for _ in 0..8 {
        match head_line(reader) {
            Ok(Some(l)) if l.is_empty() => continue,
            Ok(Some(l)) => {
                first = l;
                break;
            }
            Ok(None) | Err(_) => return Ok(None),
        }
    }
    if first.is_empty() {
        return Ok(None);
    }
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err((400, format!("not an HTTP request line: {first:?}")));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err((505, format!("{version} is not HTTP/1.0 or 1.1"))),
    };
    let (mut length, mut close, mut keep_alive, mut expect_continue) = (0u64, false, false, false);
    loop {
        let Some(line) = head_line(reader)? else { return Ok(None) };
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else { return Err((400, format!("not a header: {line:?}"))) };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase());
        match name.as_str() {
            "content-length" => length = value.parse().map_err(|_| (400, format!("Content-Length {value:?} is not a number")))?,
            "transfer-encoding" if value != "identity" => return Err((411, "send the body with a Content-Length".into())),
            "connection" => {
                close |= value.split(',').any(|v| v.trim() == "close");
                keep_alive |= value.split(',').any(|v| v.trim() == "keep-alive");
            }
            "expect" => expect_continue = value == "100-continue",
            _ => {}
        }
    }
    if length > max_body {
        return Err((413, format!("the body is over {max_body} bytes")));
    }
    if expect_continue && length > 0 {
        let mut w = stream;
        w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(|e| (400, e.to_string()))?;
    }
    let mut body = vec![0; length as usize];
    reader.read_exact(&mut body).map_err(|e| (400, format!("cannot read the body: {e}")))?;
    let path = target.split('?').next().unwrap_or("").to_string();
    Ok(Some((Request { method: method.to_string(), path, body }, close || (http10 && !keep_alive))))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// The status line and headers of `r`; with its length, or none for a stream that ends
/// when the connection closes.
fn head_bytes(r: &Response, length: Option<usize>, close: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (name, value) in &r.headers {
        out += &format!("{name}: {value}\r\n");
    }
    if let Some(n) = length {
        out += &format!("Content-Length: {n}\r\n");
    }
    out += "Server: cvae\r\n";
    if close {
        out += "Connection: close\r\n";
    }
    out += "\r\n";
    out.into_bytes()
}

/// The whole response in one write.
fn write_response(stream: &TcpStream, r: &Response, close: bool) -> std::io::Result<()> {
    let mut bytes = head_bytes(r, Some(r.body.len()), close);
    bytes.extend_from_slice(&r.body);
    let mut w = stream;
    w.write_all(&bytes)?;
    w.flush()
}
