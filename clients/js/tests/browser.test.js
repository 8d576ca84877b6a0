// End to end: HTTPSocket in real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core) against the real tether binary and the real
// line_worker. The page is served through tether by a tiny static origin;
// the page opens sessions on the worker's persistent paths.
//
// Chromium reaches tether through a TCP relay in this process. To drop the
// page's connection mid-stream the test cuts the relay's WebSocket
// connections as a network failure would: both sockets reset (RST), nothing
// more relayed, no close frame and no FIN either way. The page sees an
// abnormal close (1006), tether sees a reset; the test checks that the page
// still sees every line exactly once, in order, after one `resumed` event,
// and that the worker saw every page line exactly once, in order.
//
// Nothing is skipped: without Chromium ($CHROMIUM_BIN, else
// /usr/bin/chromium) or the binaries, every test here fails with a message.
//
// Binaries: $TETHER_BIN, else $CARGO_TARGET_DIR/debug/tether, else
// <repo>/target/debug/tether; line_worker is $LINE_WORKER_BIN or beside
// tether. `make test` builds both (`cargo build --workspace --bins`).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect, createServer as createTcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const CHROMIUM = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';
const HERE = dirname(fileURLToPath(import.meta.url));
const LIBRARY = resolve(HERE, '..', 'httpsocket.js');
const REPO = resolve(HERE, '..', '..', '..');
const TETHER = process.env.TETHER_BIN
  ?? join(process.env.CARGO_TARGET_DIR ? resolve(REPO, process.env.CARGO_TARGET_DIR) : join(REPO, 'target'), 'debug', 'tether');
const LINE_WORKER = process.env.LINE_WORKER_BIN ?? join(dirname(TETHER), 'line_worker');

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>HTTPSocket end-to-end</title>
<script type="module">
  import { HTTPSocket } from '/httpsocket.js';
  window.HTTPSocket = HTTPSocket;
  document.title = 'ready';
</script>
`;

const children = [];
let dir;
let origin;
let worker;
let gateway;
let relay;
let context;
let page;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: the browser tests need Chromium `
    + '(scripts/install-test-deps.sh, run by `make test`, installs the chromium package; or set CHROMIUM_BIN)');
  for (const bin of [TETHER, LINE_WORKER]) {
    assert.ok(existsSync(bin), `${bin} not found: build with \`cargo build --workspace --bins\` (make test does), or set TETHER_BIN`);
  }
  dir = mkdtempSync(join(tmpdir(), 'httpsocket-e2e-'));

  origin = createServer((req, res) => {
    if (req.url === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    } else if (req.url === '/httpsocket.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      res.end(readFileSync(LIBRARY));
    } else {
      res.writeHead(req.url === '/favicon.ico' ? 204 : 404);
      res.end();
    }
  });
  await new Promise((ok) => origin.listen(0, '127.0.0.1', ok));

  worker = { events: join(dir, 'worker.events') };
  const workerChild = start(LINE_WORKER, ['--listen', '127.0.0.1:0', '--events', worker.events, '--name', 'w1'], 'line_worker');
  worker.port = await firstLine(workerChild, /^listening 127\.0\.0\.1:(\d+)$/);

  const listen = await freePort();
  const admin = await freePort();
  const config = join(dir, 'tether.toml');
  writeFileSync(config, `[server]
listen = ["127.0.0.1:${listen}"]
admin_listen = "127.0.0.1:${admin}"

[[vhost]]
hosts = ["*"]
origin = "http://127.0.0.1:${origin.address().port}"

[vhost.persistent]
enabled = true
paths = ["*.pphp"]
workers = ["http://127.0.0.1:${worker.port}"]
`);
  const tether = start(TETHER, ['run', '-c', config], 'tether');
  gateway = { port: listen, child: tether };
  await acceptsWithin(listen, 10000, tether);
  relay = await startRelay(listen);

  const { chromium } = await import('playwright-core');
  context = await chromium.launchPersistentContext(join(dir, 'chromium-profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => console.log(`# page: ${m.text()}`));
  page.on('pageerror', (e) => console.log(`# page error: ${e.message}`));
  await page.goto(`http://127.0.0.1:${relay.port}/`);
  await page.waitForFunction(() => document.title === 'ready', null, { timeout: 10000 });
});

after(async () => {
  await context?.close().catch(() => {});
  relay?.close();
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await child.exited;
  }
  origin?.close();
  if (dir && process.exitCode === undefined) rmSync(dir, { recursive: true, force: true });
});

test('echo session in Chromium: lines both ways, network failure mid-stream, resume, close ends the session', { timeout: 60000 }, async () => {
  // Mid-stream: after the initial body and 100 echoes, with 300 lines sent;
  // the echoes after them are lost in flight.
  const cutsBefore = relay.cuts;
  relay.cutAfter(101);
  const result = await page.evaluate(async () => {
    const events = [];
    const lines = [];
    const s = new window.HTTPSocket('/echo.pphp', { initialDelay: 50 });
    for (const type of ['open', 'reconnecting', 'resumed', 'close', 'sessionlost']) {
      s.addEventListener(type, (e) => events.push({ type, detail: e.detail, linesSeen: lines.length }));
    }
    const TOTAL = 400;
    s.addEventListener('reconnecting', () => {
      for (let i = 301; i <= TOTAL; i++) s.send(`c${i} queued while reconnecting`);
    }, { once: true });
    const done = new Promise((resolveDone, rejectDone) => {
      s.addEventListener('sessionlost', () => rejectDone(new Error('session lost')));
      s.addEventListener('close', () => rejectDone(new Error('closed early')));
      s.online = (e) => {
        lines.push(e.detail);
        if (lines.length === TOTAL) resolveDone();
      };
    });
    await new Promise((ok) => s.addEventListener('open', ok, { once: true }));
    for (let i = 1; i <= 300; i++) s.send(`c${i} ${'x'.repeat(i % 50)}`);
    await done;
    const read = [];
    for (let i = 0; i < TOTAL; i++) read.push(await s.read());
    const sessionId = s.sessionId;
    const received = s.received;
    const initialBody = s.initialBody;
    const closed = new Promise((ok) => s.addEventListener('close', (e) => ok(e.detail), { once: true }));
    s.close();
    const closeDetail = await closed;
    return { sessionId, received, initialBody, lines, read, events, closeDetail, readAfterClose: await s.read() };
  });

  const sid = result.sessionId;
  assert.match(sid, /^[A-Za-z0-9_-]{22,64}$/);
  assert.equal(result.initialBody, `hello w1 ${sid}\n`);
  const expected = [];
  for (let i = 1; i <= 400; i++) {
    expected.push(i <= 300 ? `${i} c${i} ${'x'.repeat(i % 50)}` : `${i} c${i} queued while reconnecting`);
  }
  assert.deepEqual(result.lines, expected, 'every echo once, in order (the worker numbers the lines it read)');
  assert.deepEqual(result.read, expected, 'read() yields the same lines');
  assert.equal(result.received, 400);
  assert.equal(relay.cuts - cutsBefore, 1, 'the relay cut the WebSocket connection');
  const types = result.events.map((e) => e.type);
  assert.equal(types[0], 'open');
  assert.equal(types.filter((t) => t === 'resumed').length, 1, `events: ${JSON.stringify(result.events)}`);
  const reconnecting = result.events.find((e) => e.type === 'reconnecting');
  assert.ok(reconnecting, `events: ${JSON.stringify(result.events)}`);
  assert.equal(reconnecting.detail.code, 1006, 'the page saw a network failure (abnormal close 1006), not a close frame');
  assert.ok(reconnecting.linesSeen < 300, `the cut came mid-stream, with echoes in flight (${reconnecting.linesSeen} seen)`);
  const resumed = result.events.find((e) => e.type === 'resumed').detail;
  console.log(`# network failure after ${reconnecting.linesSeen} echoes of 300 lines sent; `
    + `resumed after ${resumed.received} lines received, ${resumed.resent} lines resent`);
  assert.deepEqual(result.closeDetail.code, 1000);
  assert.equal(result.readAfterClose, null);

  // The worker read all 400 lines once each, then saw EOF when close() ended the session.
  const events = await waitForEvent(worker.events, `eof ${sid} 400`);
  assert.ok(!events.some((e) => e.startsWith(`line ${sid} 401`)), 'no duplicate line reached the worker');
  assert.ok(!events.some((e) => e.startsWith('ERROR')), events.filter((e) => e.startsWith('ERROR')).join('\n'));
  assert.equal(events.filter((e) => e.startsWith(`conn ${sid} `)).length, 1, 'one request reached the worker: the resume did not');
});

test('worker stream in Chromium: a network failure while the worker writes loses nothing; worker end closes with 1000', { timeout: 60000 }, async () => {
  const cutsBefore = relay.cuts;
  relay.cutAfter(100);
  const result = await page.evaluate(async () => {
    const types = [];
    const codes = [];
    const seenAtDrop = [];
    const lines = [];
    const s = new window.HTTPSocket('/numbered.pphp?every_ms=2&n=300&close=1', { initialDelay: 50 });
    for (const type of ['open', 'reconnecting', 'resumed', 'sessionlost']) s.addEventListener(type, () => types.push(type));
    s.addEventListener('reconnecting', (e) => {
      codes.push(e.detail.code);
      seenAtDrop.push(lines.length);
      if (codes.length === 1) for (let i = 51; i <= 100; i++) s.send(`c${i}`);
    });
    s.online = (e) => {
      lines.push(e.detail);
      if (lines.length === 3) for (let i = 1; i <= 50; i++) s.send(`c${i}`);
    };
    const closeDetail = await new Promise((ok) => s.addEventListener('close', (e) => ok(e.detail), { once: true }));
    const read = [];
    for (let line = await s.read(); line !== null; line = await s.read()) read.push(line);
    return { sessionId: s.sessionId, types, codes, seenAtDrop, lines, read, closeDetail };
  });
  const expected = Array.from({ length: 300 }, (_, i) => `w${i + 1}`);
  assert.equal(relay.cuts - cutsBefore, 1, 'the relay cut the WebSocket connection');
  assert.deepEqual(result.lines, expected);
  assert.deepEqual(result.read, expected);
  assert.deepEqual(result.types, ['open', 'reconnecting', 'resumed']);
  assert.deepEqual(result.codes, [1006], 'the page saw a network failure (abnormal close 1006), not a close frame');
  assert.ok(result.seenAtDrop[0] < 300, `the cut came while the worker wrote (${result.seenAtDrop[0]} lines seen)`);
  console.log(`# network failure after ${result.seenAtDrop[0]} of the worker's 300 lines`);
  assert.equal(result.closeDetail.code, 1000, 'the worker ended the session: close 1000');
  const sid = result.sessionId;
  const events = await waitForEvent(worker.events, `end ${sid}`);
  assert.ok(events.includes(`line ${sid} 100`), 'the worker read every page line');
  assert.ok(!events.includes(`line ${sid} 101`));
  assert.deepEqual(events.filter((e) => e.startsWith('ERROR')), [], 'page lines reached the worker once each, in order');
});

test('gateway close codes in Chromium: takeover closes the older socket (4409), an unknown session is lost (4410)', { timeout: 60000 }, async () => {
  const result = await page.evaluate(async () => {
    const record = (s, log) => {
      for (const type of ['open', 'reconnecting', 'resumed', 'close', 'sessionlost']) {
        s.addEventListener(type, (e) => log.push({ type, code: e.detail?.code }));
      }
    };
    const next = (s, type) => new Promise((ok) => s.addEventListener(type, (e) => ok(e.detail), { once: true }));
    // A second socket made to resume the first one's session, as a second
    // tab with the same SessionID would (white-box: set before its
    // connection opens, when the first control record is written).
    const resumer = (sessionId, received, sent) => {
      const s = new window.HTTPSocket('/echo.pphp?initial=0', { initialDelay: 50 });
      s.sessionId = sessionId;
      s.received = received;
      s._sent = sent;
      s._haveInitial = true;
      return s;
    };

    const aLog = [];
    const a = new window.HTTPSocket('/echo.pphp?initial=0', { initialDelay: 50 });
    record(a, aLog);
    await next(a, 'open');
    a.send('from a');
    const echoA = await a.read();

    const bLog = [];
    const aClosed = next(a, 'close');
    const b = resumer(a.sessionId, a.received, 1);
    record(b, bLog);
    await next(b, 'resumed');
    const aClose = await aClosed;
    b.send('from b');
    const echoB = await b.read();
    await new Promise((r) => setTimeout(r, 300)); // a must not reconnect
    const bClosed = next(b, 'close');
    b.close();
    await bClosed;

    const cLog = [];
    const c = resumer('A'.repeat(22), 0, 0);
    record(c, cLog);
    const cLost = await next(c, 'sessionlost');
    await new Promise((r) => setTimeout(r, 300));
    return { sessionId: a.sessionId, echoA, echoB, aClose, aLog, bLog, cLost, cLog, aState: a.readyState, cState: c.readyState };
  });
  assert.equal(result.echoA, '1 from a');
  assert.equal(result.echoB, '2 from b', 'the same session on the worker');
  assert.equal(result.aClose.code, 4409);
  assert.equal(result.aClose.reason, 'taken over');
  assert.deepEqual(result.aLog, [{ type: 'open', code: undefined }, { type: 'close', code: 4409 }]);
  assert.deepEqual(result.bLog, [{ type: 'resumed', code: undefined }, { type: 'close', code: 1000 }]);
  assert.equal(result.cLost.code, 4410);
  assert.deepEqual(result.cLog, [{ type: 'sessionlost', code: 4410 }]);
  assert.equal(result.aState, 'closed');
  assert.equal(result.cState, 'closed');
  await waitForEvent(worker.events, `eof ${result.sessionId} 2`);
});

// --- helpers ------------------------------------------------------------------

/**
 * A TCP relay on a free port to tether's `port`, between Chromium and
 * tether. `cutAfter(n)` arms it for the next WebSocket connection: right
 * after tether's `n`-th text frame on it has been relayed to the page, the
 * connection fails as the network would: both sockets are reset (RST) at
 * once, what is in flight either way is lost, and no close frame or FIN is
 * sent to either side. `cuts` counts the connections cut.
 */
async function startRelay(port) {
  const conns = new Set();
  let armed = null;
  const relay = { port: 0, cuts: 0 };
  const cut = (conn) => {
    if (conn.client.destroyed) return;
    conns.delete(conn);
    conn.client.unpipe(conn.upstream);
    conn.client.resetAndDestroy();
    conn.upstream.resetAndDestroy();
    relay.cuts += 1;
  };
  const server = createTcpServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    const conn = { client, upstream, counter: null };
    conns.add(conn);
    client.on('data', (chunk) => {
      if (armed !== null && /^upgrade:\s*websocket\s*$/im.test(chunk.toString('latin1'))) {
        conn.counter = textFrameCounter(armed);
        armed = null;
      }
    });
    client.pipe(upstream);
    upstream.on('data', (chunk) => {
      const at = conn.counter ? conn.counter(chunk) : -1;
      if (at >= 0) {
        upstream.pause();
        client.write(chunk.subarray(0, at), () => cut(conn));
        return;
      }
      if (!client.write(chunk)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
    });
    upstream.on('end', () => client.end());
    // An error on one side destroys the other.
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => conns.delete(conn));
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  relay.port = server.address().port;
  relay.cutAfter = (textFrames) => {
    armed = textFrames;
  };
  relay.close = () => {
    server.close();
    for (const conn of conns) {
      conn.client.destroy();
      conn.upstream.destroy();
    }
  };
  return relay;
}

/**
 * Follows the bytes tether sends on a WebSocket connection (the 101 head,
 * then unmasked frames); fed chunk by chunk, returns the offset in the
 * chunk just past the `limit`-th text frame, or -1.
 */
function textFrameCounter(limit) {
  let head = Buffer.alloc(0); // the HTTP head so far, then a frame header so far
  let inHttp = true;
  let left = 0; // payload bytes of the current frame still to come
  let text = false;
  let count = 0;
  const headerLength = (h) => {
    if (h.length < 2) return 2;
    const len7 = h[1] & 0x7f;
    return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (h[1] & 0x80 ? 4 : 0);
  };
  const payloadLength = (h) => {
    const len7 = h[1] & 0x7f;
    if (len7 === 126) return h.readUInt16BE(2);
    if (len7 === 127) return Number(h.readBigUInt64BE(2));
    return len7;
  };
  return (chunk) => {
    let i = 0;
    while (i < chunk.length) {
      if (inHttp) {
        const before = head.length;
        head = Buffer.concat([head, chunk.subarray(i)]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return -1;
        i += end + 4 - before;
        head = Buffer.alloc(0);
        inHttp = false;
      } else if (left > 0) {
        const take = Math.min(left, chunk.length - i);
        left -= take;
        i += take;
        if (left === 0 && text && ++count === limit) return i;
      } else {
        head = Buffer.concat([head, chunk.subarray(i, i + 1)]);
        i += 1;
        if (head.length < headerLength(head)) continue;
        text = (head[0] & 0x0f) === 1;
        left = payloadLength(head);
        head = Buffer.alloc(0);
        if (left === 0 && text && ++count === limit) return i;
      }
    }
    return -1;
  };
}

function start(bin, args, name) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_LOG: 'info', ...process.env } });
  children.push(child);
  const chunks = [];
  child.stderr.on('data', (d) => chunks.push(d));
  child.exited = new Promise((ok) => child.on('exit', ok));
  child.stderrText = () => Buffer.concat(chunks).toString();
  child.name = name;
  return child;
}

function firstLine(child, pattern, timeoutMs = 10000) {
  return new Promise((ok, fail) => {
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(() => fail(new Error(`${child.name}: no line matching ${pattern}\n${child.stderrText()}`)), timeoutMs);
    lines.on('line', (line) => {
      const m = pattern.exec(line);
      if (m) {
        clearTimeout(timer);
        ok(Number(m[1]));
      }
    });
    child.on('exit', (code) => fail(new Error(`${child.name} exited (${code})\n${child.stderrText()}`)));
  });
}

function freePort() {
  return new Promise((ok, fail) => {
    const server = createTcpServer();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

async function acceptsWithin(port, timeoutMs, child) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${child.name} exited (${child.exitCode})\n${child.stderrText()}`);
    const ok = await new Promise((done) => {
      const sock = connect(port, '127.0.0.1');
      sock.once('connect', () => {
        sock.destroy();
        done(true);
      });
      sock.once('error', () => done(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${child.name} does not accept on ${port}\n${child.stderrText()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Polls the worker's events file until `want` is one of its lines (bounded). */
async function waitForEvent(file, want, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const events = existsSync(file) ? readFileSync(file, 'utf8').split('\n') : [];
    if (events.includes(want)) return events;
    if (Date.now() > deadline) {
      throw new Error(`no "${want}" in the worker's events:\n${events.slice(-40).join('\n')}\ntether stderr:\n${gateway.child.stderrText().slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
