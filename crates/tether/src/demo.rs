//! `tether demo`: a self-contained playground.
//!
//! [`start_demo_servers`] binds two loopback listeners on free ports and
//! serves, with tokio only:
//!
//! - the **demo origin**, a legacy web server in miniature: a friendly HTML
//!   page at `/` that explains tether and how to open a persistent session,
//!   `/hello.txt`, and `/httpsocket.js` (the browser library, so that the
//!   page can open a session over WebSocket);
//! - the **demo worker**, a stream worker (SPEC 2) for `/chat.pphp`: it
//!   answers `Connection-Type: Persistent` with a welcome line as the initial
//!   body, echoes every client line as `#<n> you said: <line>` and writes
//!   `tick <n>` every 10 s, so that a resumed session visibly goes on where
//!   it was.
//!
//! [`demo_config_toml`] writes the matching tether configuration: one `"*"`
//! vhost in front of the demo origin, with `*.pphp` sessions on the demo
//! worker. The binary writes it to a file and runs the gateway on it.
//!
//! Both servers speak just enough HTTP/1.1 for the gateway: a head of at most
//! [`MAX_HEAD`] bytes, `Content-Length` request bodies (read and discarded;
//! a chunked body gets `411` and `Connection: close`), keep-alive for
//! plain answers. They serve until the runtime shuts down.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::MissedTickBehavior;

/// Longest request head the demo servers accept.
const MAX_HEAD: usize = 16 * 1024;
/// Longest chat line (LF included); the default `max_line` of SPEC 1.
const MAX_LINE: usize = 64 * 1024;
/// How often the chat worker writes a `tick` line.
const TICK: Duration = Duration::from_secs(10);

/// Where the demo servers listen (both on 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Demo {
    /// The demo origin: plain pages.
    pub(crate) origin: SocketAddr,
    /// The demo worker: persistent `/chat.pphp` sessions.
    pub(crate) worker: SocketAddr,
}

/// Binds the demo origin and the demo worker on 127.0.0.1 port 0 and serves
/// them on tasks of the current runtime.
pub(crate) async fn start_demo_servers() -> io::Result<Demo> {
    start_with_tick(TICK).await
}

async fn start_with_tick(tick: Duration) -> io::Result<Demo> {
    let origin = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let worker = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let demo = Demo {
        origin: origin.local_addr()?,
        worker: worker.local_addr()?,
    };
    tokio::spawn(accept_loop(origin, Role::Origin));
    tokio::spawn(accept_loop(worker, Role::Worker { tick }));
    Ok(demo)
}

/// A tether configuration (SPEC 1) for the demo: the gateway listens on
/// `listen`, serves metrics on `admin`, proxies every host to the demo
/// origin and opens `*.pphp` sessions on the demo worker.
pub(crate) fn demo_config_toml(listen: SocketAddr, admin: SocketAddr, demo: &Demo) -> String {
    format!(
        r#"# tether demo configuration, written by `tether demo`.
# Plain requests go to the demo origin; *.pphp requests from a client that
# accepts application/x-persistent open sessions on the demo worker.

[server]
listen = ["{listen}"]
admin_listen = "{admin}"

[[vhost]]
hosts = ["*"]
origin = "http://{origin}"

[vhost.persistent]
enabled = true
paths = ["*.pphp"]
workers = ["http://{worker}"]
# A browser opening /page.pphp gets a page that is itself the session.
page_sessions = true
"#,
        origin = demo.origin,
        worker = demo.worker,
    )
}

#[derive(Clone, Copy)]
enum Role {
    Origin,
    Worker { tick: Duration },
}

async fn accept_loop(listener: TcpListener, role: Role) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    // A failed demo connection concerns only itself.
                    let _ = serve_connection(stream, role).await;
                });
            }
            // Out of file descriptors and the like: wait a little.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The parts of a request head the demo servers look at.
struct Request {
    method: String,
    path: String,
    host: Option<String>,
    session_id: Option<String>,
    content_length: u64,
    chunked: bool,
    keep_alive: bool,
}

/// Reads one request head; `None` at a clean EOF before it.
async fn read_request<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        match read_line_bounded(reader, &mut head, MAX_HEAD).await? {
            LineRead::Line => {}
            LineRead::Eof if head.is_empty() => return Ok(None),
            LineRead::Eof | LineRead::TooLong => return Err(invalid("bad request head")),
        }
        if head[start..] == *b"\r\n" || head[start..] == *b"\n" {
            if start == 0 {
                head.clear(); // blank lines before a request are allowed
                continue;
            }
            break;
        }
    }
    let text = std::str::from_utf8(&head).map_err(|_| invalid("request head is not UTF-8"))?;
    let mut lines = text.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("bad request line"));
    };
    let mut req = Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or_default().to_string(),
        host: None,
        session_id: None,
        content_length: 0,
        chunked: false,
        keep_alive: version == "HTTP/1.1",
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or_else(|| invalid("bad header"))?;
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "host" => req.host = Some(value.to_string()),
            "sessionid" => req.session_id = Some(value.to_string()),
            "content-length" => {
                req.content_length = value.parse().map_err(|_| invalid("bad Content-Length"))?;
            }
            "transfer-encoding" => req.chunked = true,
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        req.keep_alive = false;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        req.keep_alive = true;
                    }
                }
            }
            _ => {}
        }
    }
    if req.chunked {
        // The body is not read: answer, then close.
        req.keep_alive = false;
    }
    Ok(Some(req))
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

enum LineRead {
    /// A whole line (LF included) was appended.
    Line,
    /// EOF; bytes of an unfinished line may have been appended.
    Eof,
    /// More than `max` bytes without an LF.
    TooLong,
}

/// Appends the next line to `buf`, at most `max` bytes of it. Cancel safe:
/// every byte taken from `reader` is already in `buf`.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    let start = buf.len();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(LineRead::Eof);
        }
        let (take, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        buf.extend_from_slice(&available[..take]);
        reader.consume(take);
        if buf.len() - start > max {
            return Ok(LineRead::TooLong);
        }
        if done {
            return Ok(LineRead::Line);
        }
    }
}

async fn serve_connection(stream: TcpStream, role: Role) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    while let Some(req) = read_request(&mut reader).await? {
        if req.chunked {
            let body = b"the demo servers want a Content-Length body\n";
            respond(&mut write, &req, "411 Length Required", TEXT, body).await?;
            break;
        }
        // Request bodies are not used: skip them.
        let skipped = tokio::io::copy(
            &mut (&mut reader).take(req.content_length),
            &mut tokio::io::sink(),
        )
        .await?;
        if skipped != req.content_length {
            return Ok(());
        }
        match role {
            Role::Worker { tick } if req.path == "/chat.pphp" && req.method != "HEAD" => {
                return chat_session(reader, write, &req, tick, Welcome::Line).await;
            }
            Role::Worker { tick } if req.path == "/page.pphp" && req.method != "HEAD" => {
                return chat_session(reader, write, &req, tick, Welcome::Page).await;
            }
            Role::Worker { .. } => worker_plain(&mut write, &req).await?,
            Role::Origin => origin_page(&mut write, &req).await?,
        }
        if !req.keep_alive {
            break;
        }
    }
    write.shutdown().await
}

/// Writes a plain answer (no body for `HEAD`).
async fn respond(
    write: &mut OwnedWriteHalf,
    req: &Request,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    if req.method != "GET" && req.method != "HEAD" {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    if !req.keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if req.method != "HEAD" {
        out.extend_from_slice(body);
    }
    write.write_all(&out).await
}

const TEXT: &str = "text/plain; charset=utf-8";
/// The browser library, served by the demo origin so that the page can open
/// a session over WebSocket through tether.
const HTTPSOCKET_JS: &str = include_str!("../../../clients/js/httpsocket.js");

async fn origin_page(write: &mut OwnedWriteHalf, req: &Request) -> io::Result<()> {
    if req.method != "GET" && req.method != "HEAD" {
        let body = b"the demo origin only serves GET and HEAD\n";
        return respond(write, req, "405 Method Not Allowed", TEXT, body).await;
    }
    match req.path.as_str() {
        "/" | "/index.html" => {
            // Through the gateway, Host is the gateway's address.
            let host = req.host.as_deref().unwrap_or("127.0.0.1:8080");
            let page = index_html(&html_escape(host));
            respond(
                write,
                req,
                "200 OK",
                "text/html; charset=utf-8",
                page.as_bytes(),
            )
            .await
        }
        "/httpsocket.js" => {
            respond(
                write,
                req,
                "200 OK",
                "text/javascript; charset=utf-8",
                HTTPSOCKET_JS.as_bytes(),
            )
            .await
        }
        "/hello.txt" => {
            let body =
                b"hello from the tether demo origin: this plain request went through tether\n";
            respond(write, req, "200 OK", TEXT, body).await
        }
        _ => respond(write, req, "404 Not Found", TEXT, b"not found\n").await,
    }
}

async fn worker_plain(write: &mut OwnedWriteHalf, req: &Request) -> io::Result<()> {
    if req.path == "/chat.pphp" {
        // HEAD never opens a session (SPEC 2).
        return respond(write, req, "200 OK", TEXT, b"").await;
    }
    respond(
        write,
        req,
        "404 Not Found",
        TEXT,
        b"the demo worker serves /chat.pphp\n",
    )
    .await
}

/// What a chat session opens with: a welcome line, or (`/page.pphp`) a
/// whole HTML page that is itself the session (SPEC 12).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Welcome {
    Line,
    Page,
}

/// The worker side of one chat session (stream mode).
async fn chat_session<R: AsyncRead + Unpin>(
    mut reader: BufReader<R>,
    mut write: OwnedWriteHalf,
    req: &Request,
    tick_every: Duration,
    welcome_with: Welcome,
) -> io::Result<()> {
    let short: String = req
        .session_id
        .as_deref()
        .unwrap_or("unknown")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(6)
        .collect();
    let (content_type, welcome) = match welcome_with {
        Welcome::Line => (
            TEXT,
            format!("welcome to the tether demo; you are session {short}\n"),
        ),
        Welcome::Page => ("text/html; charset=utf-8", page_html(&short)),
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\nConnection-Type: Persistent\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n\r\n{welcome}",
        welcome.len()
    );
    write.write_all(head.as_bytes()).await?;

    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + tick_every, tick_every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut said = 0u64;
    let mut ticked = 0u64;
    let mut line = Vec::new();
    loop {
        tokio::select! {
            read = read_line_bounded(&mut reader, &mut line, MAX_LINE) => match read? {
                LineRead::Line => {
                    said += 1;
                    let mut out = format!("#{said} you said: ").into_bytes();
                    out.extend_from_slice(&line);
                    line.clear();
                    write.write_all(&out).await?;
                }
                // The gateway closed the session, or sent a line too long.
                LineRead::Eof | LineRead::TooLong => break,
            },
            _ = ticks.tick() => {
                ticked += 1;
                write.write_all(format!("tick {ticked}\n").as_bytes()).await?;
            }
        }
    }
    // Closing the connection ends the session (worker end).
    write.shutdown().await
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page of `/page.pphp`: opened in a browser, it is its own session;
/// tether puts the SessionID in it and its script attaches.
fn page_html(short: &str) -> String {
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tether demo: this page is the session</title>
</head>
<body style="font-family: system-ui, sans-serif; max-width: 42em; margin: 2em auto">
<h1>This page is session {short}</h1>
<p>The demo worker answered the browser's own request for this page, and the
page goes on talking to that same worker session: type a line, drop the
connection, carry on. Reloading the page opens a new session.</p>
<div id="log" style="height:12em; overflow-y:auto; border:1px solid #ccc; padding:0.5em; font-family:monospace; white-space:pre-wrap"></div>
<form id="say"><input id="line" autocomplete="off" placeholder="type a line" style="width:60%">
<button>send</button> <button type="button" id="drop">drop the connection</button></form>
<p><a href="/">back to the demo</a></p>
<script type="module">
import {{ HTTPSocket }} from "/httpsocket.js";
const out = document.getElementById("log");
const log = (text) => {{
  const row = document.createElement("div");
  row.textContent = text;
  out.appendChild(row);
  out.scrollTop = out.scrollHeight;
}};
const socket = HTTPSocket.page();
socket.addEventListener("line", (e) => log(e.detail));
socket.addEventListener("reconnecting", () => log("# connection lost, reconnecting"));
socket.addEventListener("resumed", () => log("# resumed: nothing lost"));
socket.addEventListener("close", () => log("# session closed"));
document.getElementById("say").addEventListener("submit", (e) => {{
  e.preventDefault();
  const input = document.getElementById("line");
  if (input.value) {{ socket.send(input.value); input.value = ""; }}
}});
document.getElementById("drop").addEventListener("click", () => socket._dropForTest());
</script>
</body>
</html>
"##
    )
}

fn index_html(host: &str) -> String {
    format!(
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tether demo</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 42em; margin: 2em auto; padding: 0 1em; line-height: 1.5; color: #222; }}
code, pre {{ background: #f3f3f3; border-radius: 4px; }}
pre {{ padding: 0.8em; overflow-x: auto; }}
</style>
</head>
<body>
<h1>Welcome to the tether demo</h1>
<p><strong>tether</strong> is a reverse proxy that sits in front of an unchanged
web server and gives it <em>persistent, resumable sessions</em>: a backend script
answers a request with <code>Connection-Type: Persistent</code>, and from then on
the connection carries lines both ways. If the client's connection drops, tether
keeps the server's side of the session alive, and the client comes back with its
<code>SessionID</code> and continues where it was: no line lost, none repeated.</p>

<p>This page came from the <em>demo origin</em>, a plain web server, through
tether. So did <a href="/hello.txt">/hello.txt</a>.</p>

<h2>Try a persistent session</h2>
<p>In a terminal, connect to the demo chat worker:</p>
<pre>tether connect http://{host}/chat.pphp</pre>
<p>Type a line and press Enter: the worker answers <code>#1 you said: ...</code>.
Every 10 seconds it also writes a <code>tick</code> line.</p>

<h2>Try it in this page</h2>
<p>This page opens a session over WebSocket with the
<a href="/httpsocket.js"><code>HTTPSocket</code></a> library. Send a line, then
drop the connection: the library resumes and nothing is lost or repeated.</p>
<div id="log" style="height:12em; overflow-y:auto; border:1px solid #ccc; padding:0.5em; font-family:monospace; white-space:pre-wrap"></div>
<form id="say"><input id="line" autocomplete="off" placeholder="type a line" style="width:60%">
<button>send</button> <button type="button" id="drop">drop the connection</button></form>
<script type="module">
import {{ HTTPSocket }} from "/httpsocket.js";
const out = document.getElementById("log");
const log = (text) => {{
  const row = document.createElement("div");
  row.textContent = text;
  out.appendChild(row);
  out.scrollTop = out.scrollHeight;
}};
const socket = new HTTPSocket(location.origin + "/chat.pphp");
socket.addEventListener("open", (e) => log("# open: " + (e.detail.initialBody || "").trim()));
socket.addEventListener("line", (e) => log(e.detail));
socket.addEventListener("reconnecting", () => log("# connection lost, reconnecting"));
socket.addEventListener("resumed", () => log("# resumed: nothing lost"));
socket.addEventListener("sessionlost", () => log("# session lost"));
socket.addEventListener("close", () => log("# session closed"));
document.getElementById("say").addEventListener("submit", (e) => {{
  e.preventDefault();
  const input = document.getElementById("line");
  if (input.value) {{ socket.send(input.value); input.value = ""; }}
}});
document.getElementById("drop").addEventListener("click", () => socket._dropForTest());
</script>

<h2>A page that is itself the session</h2>
<p>Open <a href="/page.pphp">/page.pphp</a>: the browser's own request for
that page opens the session (<code>page_sessions = true</code>), tether puts
the SessionID into the page, and the page's script attaches to it with
<code>HTTPSocket.page()</code>.</p>

<h2>See resume at work</h2>
<p>Cut the connection while the session runs (suspend the client, or drop the
network for a moment): the client reconnects with its <code>SessionID</code> and
<code>Session-Received</code> count, tether replays the lines the client missed,
and the ticks and the counter go on without a gap. The worker never notices.</p>

<h2>Under the hood</h2>
<p>The opening request must accept <code>application/x-persistent</code>;
try it by hand to see the answer head:</p>
<pre>curl -i -N -H 'Accept: application/x-persistent' http://{host}/chat.pphp</pre>
<p>Metrics are on the admin listener at <code>/metrics</code>.</p>
</body>
</html>
"##
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    struct Client {
        reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
        write: OwnedWriteHalf,
    }

    impl Client {
        async fn connect(addr: SocketAddr) -> Client {
            let (read, write) = TcpStream::connect(addr).await.unwrap().into_split();
            Client {
                reader: BufReader::new(read),
                write,
            }
        }

        async fn send(&mut self, bytes: &str) {
            self.write.write_all(bytes.as_bytes()).await.unwrap();
        }

        async fn line(&mut self) -> String {
            let mut s = String::new();
            self.reader.read_line(&mut s).await.unwrap();
            s
        }

        /// Status code, lower-cased headers and the `Content-Length` body.
        async fn response(&mut self) -> (u16, Vec<(String, String)>, String) {
            let status_line = self.line().await;
            let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
            let mut headers = Vec::new();
            loop {
                let l = self.line().await;
                let l = l.trim_end();
                if l.is_empty() {
                    break;
                }
                let (n, v) = l.split_once(':').unwrap();
                headers.push((n.to_ascii_lowercase(), v.trim().to_string()));
            }
            let len = header(&headers, "content-length").map_or(0, |v| v.parse().unwrap());
            let mut body = vec![0; len];
            self.reader.read_exact(&mut body).await.unwrap();
            (status, headers, String::from_utf8(body).unwrap())
        }
    }

    fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn origin_serves_the_page_and_hello_on_one_connection() {
        let demo = start_demo_servers().await.unwrap();
        assert!(demo.origin.ip().is_loopback() && demo.worker.ip().is_loopback());
        let mut c = Client::connect(demo.origin).await;
        c.send("GET / HTTP/1.1\r\nHost: gw.test:8080\r\n\r\n").await;
        let (status, h, body) = c.response().await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "content-type"), Some("text/html; charset=utf-8"));
        assert!(body.contains("tether connect http://gw.test:8080/chat.pphp"));

        c.send("GET /hello.txt HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\n\r\nabc")
            .await;
        let (status, _, body) = c.response().await;
        assert_eq!(status, 200);
        assert!(body.starts_with("hello from the tether demo origin"));

        c.send("GET /missing HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n")
            .await;
        let (status, h, _) = c.response().await;
        assert_eq!(status, 404);
        assert_eq!(header(&h, "connection"), Some("close"));
        assert_eq!(c.line().await, "", "closed after Connection: close");
    }

    #[tokio::test]
    async fn origin_serves_the_browser_library_the_page_uses() {
        let demo = start_demo_servers().await.unwrap();
        let mut c = Client::connect(demo.origin).await;
        c.send("GET / HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
        let (_, _, page) = c.response().await;
        assert!(page.contains(r#"import { HTTPSocket } from "/httpsocket.js";"#));
        c.send("GET /httpsocket.js HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            .await;
        let (status, h, body) = c.response().await;
        assert_eq!(status, 200);
        assert_eq!(
            header(&h, "content-type"),
            Some("text/javascript; charset=utf-8")
        );
        assert!(body.contains("export class HTTPSocket"));
    }

    #[tokio::test]
    async fn origin_escapes_the_host() {
        let demo = start_demo_servers().await.unwrap();
        let mut c = Client::connect(demo.origin).await;
        c.send("GET / HTTP/1.1\r\nHost: <b>\r\n\r\n").await;
        let (_, _, body) = c.response().await;
        assert!(body.contains("http://&lt;b&gt;/chat.pphp"));
        assert!(!body.contains("<b>"));
    }

    #[tokio::test]
    async fn the_page_of_page_pphp_is_its_own_session() {
        let demo = start_demo_servers().await.unwrap();
        let mut c = Client::connect(demo.worker).await;
        c.send(
            "GET /page.pphp HTTP/1.1\r\nHost: gw.test\r\nSessionID: AbCdEfGhIjKlMnOpQrStUv\r\n\
             Accept: text/html\r\n\r\n",
        )
        .await;
        let (status, h, body) = c.response().await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "connection-type"), Some("Persistent"));
        assert!(header(&h, "content-type").is_some_and(|t| t.starts_with("text/html")));
        assert!(body.contains("<head>") && body.contains("HTTPSocket.page()"));
        assert!(body.contains("session AbCdEf"));
        c.send("hello\n").await;
        assert_eq!(c.line().await, "#1 you said: hello\n");
    }

    #[tokio::test]
    async fn worker_opens_a_chat_session_and_echoes() {
        let demo = start_demo_servers().await.unwrap();
        let mut c = Client::connect(demo.worker).await;
        c.send(
            "GET /chat.pphp HTTP/1.1\r\nHost: gw.test\r\nSessionID: AbCdEfGhIjKlMnOpQrStUv\r\n\
             X-Forwarded-For: 127.0.0.1\r\n\r\n",
        )
        .await;
        let (status, h, body) = c.response().await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "connection-type"), Some("Persistent"));
        assert_eq!(body, "welcome to the tether demo; you are session AbCdEf\n");
        c.send("hello\nhow are you?\n").await;
        assert_eq!(c.line().await, "#1 you said: hello\n");
        assert_eq!(c.line().await, "#2 you said: how are you?\n");
        c.write.shutdown().await.unwrap();
        assert_eq!(c.line().await, "", "the worker closes after the gateway");
    }

    #[tokio::test]
    async fn worker_ticks_and_head_never_opens() {
        let demo = start_with_tick(Duration::from_millis(20)).await.unwrap();
        let mut c = Client::connect(demo.worker).await;
        c.send("GET /chat.pphp HTTP/1.1\r\nHost: gw.test\r\nSessionID: xyz\r\n\r\n")
            .await;
        let (_, _, body) = c.response().await;
        assert_eq!(body, "welcome to the tether demo; you are session xyz\n");
        assert_eq!(c.line().await, "tick 1\n");
        assert_eq!(c.line().await, "tick 2\n");

        let mut c = Client::connect(demo.worker).await;
        c.send("HEAD /chat.pphp HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            .await;
        let (status, h, _) = c.response().await;
        assert_eq!(status, 200);
        assert_eq!(header(&h, "connection-type"), None);
        c.send("GET /other HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
        assert_eq!(c.response().await.0, 404);
    }

    #[test]
    fn config_names_the_demo_servers() {
        let demo = Demo {
            origin: "127.0.0.1:4001".parse().unwrap(),
            worker: "127.0.0.1:4002".parse().unwrap(),
        };
        let toml = demo_config_toml(
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:9900".parse().unwrap(),
            &demo,
        );
        for want in [
            "[server]\nlisten = [\"127.0.0.1:8080\"]\nadmin_listen = \"127.0.0.1:9900\"\n",
            "[[vhost]]\nhosts = [\"*\"]\norigin = \"http://127.0.0.1:4001\"\n",
            "[vhost.persistent]\nenabled = true\npaths = [\"*.pphp\"]\n\
             workers = [\"http://127.0.0.1:4002\"]\n",
        ] {
            assert!(toml.contains(want), "{want:?} not in\n{toml}");
        }
    }
}
