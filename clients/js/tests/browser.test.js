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
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
const relays = []; // more relays, closed by the after hook
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
  writeFileSync(config, tetherConfig(listen, admin));
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
  for (const r of relays) r.close();
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      // Apache's prefork children outlive a SIGKILLed parent: stop it as apachectl does.
      child.kill(child.stopSignal ?? 'SIGKILL');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10000);
      await child.exited;
      clearTimeout(timer);
    }
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

// The page is the session (SPEC 12), with real Apache + mod_php behind a
// second tether (message mode, page_sessions = true, message_format =
// "form"): Chromium navigates to page.pphp, PHP answers with the whole page,
// tether inserts the meta tag, the page's script attaches with
// HTTPSocket.page(), and form messages reach PHP as $_POST.
const PAGE_PHP = `<?php
$event = $_SERVER['HTTP_SESSION_EVENT'] ?? '-';
$sid = preg_replace('/[^A-Za-z0-9_-]/', '', $_SERVER['HTTP_SESSIONID'] ?? '-');
$state = __DIR__ . '/../state/';
file_put_contents($state . 'events.log', json_encode([
    'event' => $event,
    'sid' => $sid,
    'type' => $_SERVER['CONTENT_TYPE'] ?? '',
    'post' => $_POST,
]) . "\\n", FILE_APPEND | LOCK_EX);
if ($event === 'open') {
    header('Connection-Type: Persistent');
    header('Content-Type: text/html; charset=utf-8');
    file_put_contents($state . $sid, '0');
    $user = htmlspecialchars($_GET['user'] ?? '?');
    echo <<<HTML
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>page session</title></head>
<body>
<p id="who">opened for $user</p>
<form id="f"><input name="name" value="Ann"><input name="text" value="ü &amp; = first"></form>
<script type="module">
  import { HTTPSocket } from '/httpsocket.js';
  window.HTTPSocket = HTTPSocket;
  window.log = [];
  window.lines = [];
  const s = HTTPSocket.page({ initialDelay: 50 });
  for (const type of ['open', 'reconnecting', 'resumed', 'close', 'sessionlost']) {
    s.addEventListener(type, (e) => window.log.push({ type, detail: e.detail, at: performance.now(), linesSeen: window.lines.length }));
  }
  s.online = (e) => window.lines.push(e.detail);
  document.title = 'ready';
</script>
</body></html>

HTML;
    exit;
}
if ($event === 'message') {
    $n = (int) file_get_contents($state . $sid) + 1;
    file_put_contents($state . $sid, (string) $n);
    echo $n, ' hello ', $_POST['name'] ?? '?', ': ', $_POST['text'] ?? '', ' tags=', implode(',', $_POST['tags'] ?? []), "\\n";
}
`;

test('the page is the session in Chromium: navigation to PHP under Apache, HTTPSocket.page() attaches, form messages reach $_POST, a network failure loses nothing', { timeout: 90000 }, async () => {
  const site = await startPageSite();
  const TOTAL = 40;
  const CUT = 12; // tether's 12th text frame on the page's connection: the 12th answer
  site.relay.cutAfter(CUT);
  const response = await page.goto(`http://127.0.0.1:${site.relay.port}/page.pphp?user=ann%26co`);
  assert.equal(response.status(), 200);
  assert.equal(response.headers()['cache-control'], 'no-store');
  await page.waitForFunction(() => document.title === 'ready', null, { timeout: 10000 });

  // PHP's answer to message 2 holds an LF (from a %0A in its form data): two lines.
  const LINES = TOTAL + 1;
  const result = await page.evaluate(async ([TOTAL, LINES]) => {
    const s = window.HTTPSocket.page();
    const same = s === document.defaultHTMLSocket && s === window.HTTPSocket.page();
    const meta = document.querySelector('meta[name="tether-session"]');
    const metaFirstInHead = document.head.firstElementChild === meta;
    if (s.readyState !== 'open') await new Promise((ok) => s.addEventListener('open', ok, { once: true }));
    const done = new Promise((resolveDone, rejectDone) => {
      s.addEventListener('sessionlost', () => rejectDone(new Error('session lost')));
      s.addEventListener('close', () => rejectDone(new Error('closed early')));
      const check = () => {
        if (window.lines.length >= LINES) resolveDone();
      };
      s.addEventListener('line', check);
      check();
    });
    let refused = '';
    try {
      const withFile = new FormData();
      withFile.append('upload', new File(['x'], 'x.txt'));
      s.send(withFile);
    } catch (e) {
      refused = `${e.name}: ${e.message}`;
    }
    // 1: the page's own form; 2: URLSearchParams with a PHP array; 3..30: objects.
    s.send(new FormData(document.getElementById('f')));
    s.send(new URLSearchParams([['name', 'Bo'], ['text', 'two\nlines'], ['tags[]', 'a'], ['tags[]', 'b']]));
    for (let i = 3; i <= 30; i++) s.send({ name: 'Cy', text: `m${i} 50% + a&b=c`, 'tags[]': [`t${i}`] });
    s.addEventListener('reconnecting', () => {
      for (let i = 31; i <= TOTAL; i++) s.send({ name: 'Di', text: `m${i} queued while reconnecting` });
    }, { once: true });
    await done;
    const lines = window.lines.slice();
    const read = [];
    for (let i = 0; i < LINES; i++) read.push(await s.read());
    const closed = new Promise((ok) => s.addEventListener('close', (e) => ok(e.detail), { once: true }));
    s.close();
    const closeDetail = await closed;
    return {
      sessionId: s.sessionId, metaContent: meta?.content, metaFirstInHead, same, refused, lines, read,
      log: window.log, closeDetail, who: document.getElementById('who').textContent, url: s.url,
      navigationToOpen: window.log.find((e) => e.type === 'open')?.at,
    };
  }, [TOTAL, LINES]);

  const sid = result.sessionId;
  assert.match(sid, /^[A-Za-z0-9_-]{22,64}$/);
  assert.equal(result.metaContent, sid, 'the page attached to the session of its meta tag');
  assert.ok(result.metaFirstInHead, 'the meta tag is the first element of <head>');
  assert.ok(result.same, 'HTTPSocket.page() twice and document.defaultHTMLSocket are one object');
  assert.equal(result.who, 'opened for ann&co', 'the page is PHP\'s answer to the navigation');
  assert.equal(result.url, `ws://127.0.0.1:${site.relay.port}/page.pphp?user=ann%26co`);
  assert.match(result.refused, /^TypeError: .*FormData field "upload" holds a file/);

  const expected = [
    '1 hello Ann: ü & = first tags=',
    '2 hello Bo: two\nlines tags=a,b',
  ];
  for (let i = 3; i <= 30; i++) expected.push(`${i} hello Cy: m${i} 50% + a&b=c tags=t${i}`);
  for (let i = 31; i <= TOTAL; i++) expected.push(`${i} hello Di: m${i} queued while reconnecting tags=`);
  const expectedLines = expected.flatMap((l) => l.split('\n'));
  assert.equal(expectedLines.length, LINES);
  assert.deepEqual(result.lines, expectedLines, 'every answer once, in order');
  assert.deepEqual(result.read, expectedLines, 'read() yields the same lines');

  const types = result.log.map((e) => e.type);
  assert.deepEqual(types, ['open', 'reconnecting', 'resumed', 'close'], JSON.stringify(result.log));
  assert.equal(result.log[0].detail.sessionId, sid);
  assert.equal(result.log[0].detail.initialBody, '', 'the page was the initial body');
  assert.equal(result.log[1].detail.code, 1006, 'the page saw a network failure (abnormal close 1006)');
  assert.equal(site.relay.cuts, 1, 'the relay cut the page\'s WebSocket connection');
  assert.ok(result.log[1].linesSeen < expectedLines.length, 'the cut came mid-stream');
  assert.equal(result.closeDetail.code, 1000);
  console.log(`# page session: navigation to attached session ${result.navigationToOpen.toFixed(1)} ms; `
    + `network failure after ${result.log[1].linesSeen} answers, resumed with ${result.log[2].detail.resent} lines resent`);

  // PHP saw the navigation as the open, every form message once, in order,
  // in $_POST from an application/x-www-form-urlencoded body, then the close.
  const events = await site.waitForEvents((ev) => ev.some((e) => e.event === 'close' && e.sid === sid));
  const mine = events.filter((e) => e.sid === sid);
  assert.equal(mine[0].event, 'open');
  assert.equal(mine.at(-1).event, 'close');
  const messages = mine.filter((e) => e.event === 'message');
  assert.equal(messages.length, TOTAL, 'one message request per form message, none twice');
  for (const m of messages) assert.equal(m.type, 'application/x-www-form-urlencoded');
  assert.deepEqual(messages[0].post, { name: 'Ann', text: 'ü & = first' });
  assert.deepEqual(messages[1].post, { name: 'Bo', text: 'two\nlines', tags: ['a', 'b'] });
  for (let i = 3; i <= 30; i++) assert.deepEqual(messages[i - 1].post, { name: 'Cy', text: `m${i} 50% + a&b=c`, tags: [`t${i}`] });
  for (let i = 31; i <= TOTAL; i++) assert.deepEqual(messages[i - 1].post, { name: 'Di', text: `m${i} queued while reconnecting` });
  assert.equal(mine.length, TOTAL + 2);
});

test('docs/php.md\'s page session example works in Chromium as documented: type, submit, PHP answers from $_POST', { timeout: 60000 }, async () => {
  const site = await startPageSite();
  const response = await page.goto(`http://127.0.0.1:${site.relay.port}/doc.pphp`);
  assert.equal(response.status(), 200);
  await page.waitForFunction(() => document.defaultHTMLSocket?.readyState === 'open', null, { timeout: 10000 });
  const sid = await page.evaluate(() => document.defaultHTMLSocket.sessionId);
  for (const text of ['hi there', 'ü & = %0A']) {
    await page.fill('input[name="text"]', text);
    await page.click('button');
  }
  await page.waitForFunction(() => document.querySelectorAll('#log li').length >= 2, null, { timeout: 10000 });
  const items = await page.$$eval('#log li', (lis) => lis.map((li) => li.textContent));
  assert.deepEqual(items, ['you said: hi there', 'you said: ü & = %0A']);
  await page.evaluate(() => document.defaultHTMLSocket.close());
  const events = await site.waitForEvents((ev) => ev.some((e) => e.event === 'close' && e.sid === sid));
  assert.deepEqual(events.filter((e) => e.sid === sid).map((e) => e.event), ['open', 'message', 'message', 'close']);
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
test('WebSocket blocked in Chromium: HTTPSocket falls back to the HTTP transport, exchanges lines, survives a network failure of its down channel with nothing lost', { timeout: 60000 }, async () => {
  const blocking = await startBlockingRelay(gateway.port);
  relays.push(blocking);
  const blocked = await context.newPage();
  blocked.on('console', (m) => console.log(`# blocked page: ${m.text()}`));
  await blocked.exposeFunction('cutDownChannel', () => blocking.cutEventStreams());
  await blocked.goto(`http://127.0.0.1:${blocking.port}/`);
  await blocked.waitForFunction(() => document.title === 'ready', null, { timeout: 10000 });
  const result = await blocked.evaluate(async () => {
    const started = performance.now();
    const events = [];
    const lines = [];
    const s = new window.HTTPSocket('/echo.pphp', { initialDelay: 50 });
    for (const type of ['open', 'reconnecting', 'resumed', 'close', 'sessionlost']) {
      s.addEventListener(type, (e) => events.push({ type, code: e.detail?.code, linesSeen: lines.length }));
    }
    const TOTAL = 200;
    let cuts = 0;
    const done = new Promise((resolveDone, rejectDone) => {
      s.addEventListener('sessionlost', () => rejectDone(new Error('session lost')));
      s.addEventListener('close', () => rejectDone(new Error('closed early')));
      s.online = async (e) => {
        lines.push(e.detail);
        if (lines.length === 50) {
          // Mid-stream, with echoes and POSTs in flight.
          cuts = await window.cutDownChannel();
          for (let i = 101; i <= TOTAL; i++) s.send(`c${i} after the cut`);
        }
        if (lines.length === TOTAL) resolveDone();
      };
    });
    await new Promise((ok) => s.addEventListener('open', ok, { once: true }));
    const transport = s.transport;
    s.send('c1 first');
    const first = await s.read();
    const toFirstLine = performance.now() - started;
    for (let i = 2; i <= 100; i++) s.send(`c${i} ${'y'.repeat(i % 40)}`);
    await done;
    const sessionId = s.sessionId;
    const closed = new Promise((ok) => s.addEventListener('close', (e) => ok(e.detail), { once: true }));
    s.close();
    const closeDetail = await closed;
    return { sessionId, transport, first, toFirstLine, lines, events, cuts, closeDetail, received: s.received };
  });
  await blocked.close();

  assert.equal(result.transport, 'http', 'the refused upgrade made HTTPSocket fall back');
  assert.ok(blocking.refusedUpgrades >= 1, 'the relay refused a WebSocket upgrade');
  assert.equal(result.first, '1 c1 first');
  console.log(`# blocked upgrade to the first echoed line over the HTTP transport: ${Math.round(result.toFirstLine)} ms`);
  const expected = [];
  for (let i = 1; i <= 200; i++) {
    expected.push(i === 1 ? '1 c1 first' : i <= 100 ? `${i} c${i} ${'y'.repeat(i % 40)}` : `${i} c${i} after the cut`);
  }
  assert.deepEqual(result.lines, expected, 'every echo once, in order (the worker numbers the lines it read)');
  assert.equal(result.received, 200);
  assert.ok(result.cuts >= 1, 'the relay cut the down channel');
  const types = result.events.map((e) => e.type);
  assert.equal(types[0], 'open');
  assert.equal(types.filter((t) => t === 'resumed').length, 1, `events: ${JSON.stringify(result.events)}`);
  assert.equal(result.events.find((e) => e.type === 'reconnecting').code, 1006);
  assert.equal(result.closeDetail.code, 1000);

  const sid = result.sessionId;
  const events = await waitForEvent(worker.events, `eof ${sid} 200`);
  assert.ok(!events.some((e) => e.startsWith(`line ${sid} 201`)), 'no duplicate line reached the worker');
  assert.deepEqual(events.filter((e) => e.startsWith('ERROR')), []);
  assert.equal(events.filter((e) => e.startsWith(`conn ${sid} `)).length, 1, 'one request reached the worker: the resume did not');
});

test('WebSocket silently stalled in Chromium: no open record within 5 s, HTTPSocket falls back to the HTTP transport', { timeout: 60000 }, async () => {
  const stalling = await startBlockingRelay(gateway.port, { stall: true });
  relays.push(stalling);
  const stalled = await context.newPage();
  await stalled.goto(`http://127.0.0.1:${stalling.port}/`);
  await stalled.waitForFunction(() => document.title === 'ready', null, { timeout: 10000 });
  const result = await stalled.evaluate(async () => {
    const started = performance.now();
    const s = new window.HTTPSocket('/echo.pphp?initial=0', { initialDelay: 50 });
    await new Promise((ok, fail) => {
      s.addEventListener('open', ok, { once: true });
      s.addEventListener('close', () => fail(new Error('closed')), { once: true });
    });
    const opened = performance.now() - started;
    s.send('over http');
    const echo = await s.read();
    // A second socket of the page goes straight to HTTP (remembered).
    const started2 = performance.now();
    const t = new window.HTTPSocket('/echo.pphp?initial=0');
    await new Promise((ok) => t.addEventListener('open', ok, { once: true }));
    const opened2 = performance.now() - started2;
    const transports = [s.transport, t.transport];
    for (const x of [s, t]) {
      const closed = new Promise((ok) => x.addEventListener('close', ok, { once: true }));
      x.close();
      await closed;
    }
    return { opened, opened2, echo, transports };
  });
  await stalled.close();
  assert.deepEqual(result.transports, ['http', 'http']);
  assert.equal(result.echo, '1 over http');
  assert.equal(stalling.refusedUpgrades, 1, 'only the first socket tried WebSocket');
  assert.ok(result.opened >= 5000 && result.opened < 8000, `open after ${result.opened} ms`);
  assert.ok(result.opened2 < 2000, `the second socket opened after ${result.opened2} ms`);
  console.log(`# stalled upgrade: open over HTTP after ${Math.round(result.opened)} ms; a second socket after ${Math.round(result.opened2)} ms`);
});

test('upgrade in Chromium: SIGUSR2 hands HTTPSocket sessions to the new binary, over WebSocket and over the HTTP transport, with nothing lost', { timeout: 90000 }, async () => {
  // A tether of its own (the shared one serves the other tests), with the
  // same origin and worker; the page talks to it directly (plain TCP).
  const listen = await freePort();
  const admin = await freePort();
  const config = join(dir, 'upgrade.toml');
  writeFileSync(config, tetherConfig(listen, admin));
  const old = start(TETHER, ['run', '-c', config], 'tether (to upgrade)');
  await acceptsWithin(listen, 10000, old);
  let newPid = null;
  const upgrading = await context.newPage();
  upgrading.on('console', (m) => console.log(`# upgrading page: ${m.text()}`));
  await upgrading.exposeFunction('upgradeTether', async () => {
    const mark = old.stderrText().length;
    process.kill(old.pid, 'SIGUSR2');
    const deadline = Date.now() + 30000;
    for (;;) {
      const log = old.stderrText().slice(mark);
      const started = /upgrade: new process started.*?pid=(\d+)|pid=(\d+).*?upgrade: new process started/.exec(log);
      if (started && newPid === null) newPid = Number(started[1] ?? started[2]);
      if (log.includes('upgrade: handover complete')) return log.split('\n').find((l) => l.includes('handover complete'));
      if (log.includes('upgrade failed') || Date.now() > deadline) throw new Error(`no handover:\n${log}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  });
  try {
    await upgrading.goto(`http://127.0.0.1:${listen}/`);
    await upgrading.waitForFunction(() => document.title === 'ready', null, { timeout: 10000 });
    const result = await upgrading.evaluate(async () => {
      const TOTAL = 200;
      const open = (options) => {
        const s = new window.HTTPSocket('/echo.pphp?initial=0', { initialDelay: 50, ...options });
        const run = { s, lines: [], events: [] };
        for (const type of ['open', 'reconnecting', 'resumed', 'close', 'sessionlost']) {
          s.addEventListener(type, (e) => run.events.push({ type, code: e.detail?.code, reason: e.detail?.reason, linesSeen: run.lines.length }));
        }
        run.done = new Promise((resolveDone, rejectDone) => {
          s.addEventListener('sessionlost', () => rejectDone(new Error(`session lost: ${JSON.stringify(run.events)}`)));
          s.addEventListener('close', () => rejectDone(new Error(`closed early: ${JSON.stringify(run.events)}`)));
          s.online = (e) => {
            run.lines.push(e.detail);
            if (run.lines.length === TOTAL) resolveDone();
          };
        });
        run.opened = new Promise((ok) => s.addEventListener('open', ok, { once: true }));
        return run;
      };
      const runs = [open({}), open({ transports: ['http'] })];
      await Promise.all(runs.map((r) => r.opened));
      const send = (from, to) => {
        for (const r of runs) for (let i = from; i <= to; i++) r.s.send(`c${i}`);
      };
      send(1, 100);
      // The upgrade while lines are in flight both ways; more lines follow
      // while the sessions are on their way.
      const upgraded = window.upgradeTether();
      await new Promise((r) => setTimeout(r, 5));
      send(101, 150);
      const complete = await upgraded;
      send(151, TOTAL);
      await Promise.all(runs.map((r) => r.done));
      const out = [];
      for (const r of runs) {
        const closed = new Promise((ok) => r.s.addEventListener('close', (e) => ok(e.detail), { once: true }));
        const item = { transport: r.s.transport, sessionId: r.s.sessionId, lines: r.lines, events: r.events, received: r.s.received };
        r.s.close();
        item.closeDetail = await closed;
        out.push(item);
      }
      return { complete, runs: out };
    });
    console.log(`# ${result.complete}`);
    const expected = [];
    for (let i = 1; i <= 200; i++) expected.push(`${i} c${i}`);
    assert.deepEqual(result.runs.map((r) => r.transport), ['websocket', 'http']);
    for (const r of result.runs) {
      const types = r.events.map((e) => e.type);
      console.log(`# ${r.transport}: events ${JSON.stringify(r.events)}`);
      assert.deepEqual(r.lines, expected, `${r.transport}: every echo once, in order, across the upgrade`);
      assert.equal(r.received, 200);
      assert.ok(!types.includes('sessionlost'), `${r.transport}: ${JSON.stringify(r.events)}`);
      assert.equal(r.closeDetail.code, 1000, `${r.transport}: closed by the page, normally`);
      const events = await waitForEvent(worker.events, `eof ${r.sessionId} 200`);
      assert.deepEqual(events.filter((e) => e.startsWith('ERROR')), []);
      assert.equal(events.filter((e) => e.startsWith(`conn ${r.sessionId} `)).length, 1, `${r.transport}: one worker connection, kept across the upgrade`);
    }
    // SPEC 10: a WebSocket on a plain TCP listener moves with its connection.
    assert.deepEqual(result.runs[0].events.map((e) => e.type), ['open', 'close'], 'the WebSocket session never noticed the upgrade');
    const code = await Promise.race([old.exited, new Promise((r) => setTimeout(() => r('still running'), 30000))]);
    assert.equal(code, 0, `the old process exits 0\n${old.stderrText().slice(-3000)}`);
    assert.ok(newPid !== null, 'the new process logged its start');
  } finally {
    await upgrading.close();
    // The new process is not this test's child: killed by pid, if it is
    // still the tether that the upgrade started.
    if (newPid !== null && existsSync(`/proc/${newPid}/cmdline`)
      && readFileSync(`/proc/${newPid}/cmdline`, 'utf8').startsWith(TETHER)) {
      process.kill(newPid, 'SIGKILL');
    }
  }
});

/**
 * A TCP relay in front of tether that refuses every WebSocket upgrade with
 * 403, as a proxy that blocks WebSocket does, and relays the rest;
 * `cutEventStreams()` resets (RST both ways) the connections that carry a
 * Server-Sent Events request, as a network failure would.
 */
async function startBlockingRelay(port, { stall = false } = {}) {
  const conns = new Set();
  const relay = { port: 0, refusedUpgrades: 0 };
  const server = createTcpServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    const conn = { client, upstream, events: false };
    conns.add(conn);
    client.on('data', (chunk) => {
      const text = chunk.toString('latin1');
      if (/^upgrade:\s*websocket\s*$/im.test(text)) {
        relay.refusedUpgrades += 1;
        upstream.destroy();
        if (stall) {
          // A proxy that takes the upgrade and never answers: the
          // connection stays open, silent (closed by the after hook).
          conn.stalled = true;
          return;
        }
        conns.delete(conn);
        client.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        return;
      }
      if (conn.stalled) return;
      if (/^accept:\s*text\/event-stream\s*$/im.test(text)) conn.events = true;
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => client.write(chunk));
    upstream.on('end', () => client.end());
    client.on('end', () => upstream.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => { if (!conn.stalled) client.destroy(); });
    client.on('close', () => conns.delete(conn));
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  relay.port = server.address().port;
  relay.cutEventStreams = () => {
    let cuts = 0;
    for (const conn of conns) {
      if (!conn.events || conn.client.destroyed) continue;
      conns.delete(conn);
      conn.client.resetAndDestroy();
      conn.upstream.resetAndDestroy();
      cuts += 1;
    }
    return cuts;
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

/**
 * Apache + mod_php (prefork, as tests/src/apache.rs runs it) serving
 * page.pphp and httpsocket.js, behind a second tether with page sessions in
 * message mode with form messages, reached through its own relay. Stopped
 * by the `after` hook.
 */
let pageSite = null;
function startPageSite() {
  pageSite ??= makePageSite();
  return pageSite;
}

async function makePageSite() {
  const modules = '/usr/lib/apache2/modules';
  assert.ok(existsSync('/usr/sbin/apache2') || existsSync('/usr/bin/apache2'), 'apache2 not found: the page session test needs Apache + mod_php (scripts/install-test-deps.sh)');
  const php = readdirSync(modules).filter((n) => /^libphp.*\.so$/.test(n)).sort().pop();
  assert.ok(php, `no libphp*.so in ${modules}: install libapache2-mod-php`);
  const site = join(dir, 'apache');
  for (const sub of ['root', 'run', 'state']) mkdirSync(join(site, sub), { recursive: true });
  chmodSync(dir, 0o755);
  chmodSync(site, 0o755);
  chmodSync(join(site, 'root'), 0o755);
  chmodSync(join(site, 'state'), 0o777);
  writeFileSync(join(site, 'root', 'page.pphp'), PAGE_PHP);
  writeFileSync(join(site, 'root', 'doc.pphp'), docsPageScript());
  copyFileSync(LIBRARY, join(site, 'root', 'httpsocket.js'));
  writeFileSync(join(site, 'root', 'favicon.ico'), '');
  const events = join(site, 'state', 'events.log');
  writeFileSync(events, '');
  chmodSync(events, 0o666);
  const port = await freePort();
  const root = process.getuid?.() === 0 ? 'User www-data\nGroup www-data\n' : '';
  writeFileSync(join(site, 'httpd.conf'), `ServerRoot "${site}"
ServerName 127.0.0.1
Listen 127.0.0.1:${port}
PidFile ${site}/httpd.pid
DefaultRuntimeDir ${site}/run
Mutex file:${site}/run default
ErrorLog ${site}/error.log
LogLevel warn
LoadModule mpm_prefork_module ${modules}/mod_mpm_prefork.so
LoadModule authz_core_module ${modules}/mod_authz_core.so
LoadModule mime_module ${modules}/mod_mime.so
LoadModule php_module ${modules}/${php}
${root}StartServers 2
MinSpareServers 4
MaxSpareServers 8
MaxRequestWorkers 32
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 30
TypesConfig /etc/mime.types
DocumentRoot ${site}/root
<Directory />
    Require all denied
</Directory>
<Directory ${site}/root>
    Require all granted
</Directory>
<FilesMatch "\\.pphp$">
    SetHandler application/x-httpd-php
</FilesMatch>
php_admin_value output_buffering 0
`);
  // In its own process group: stopping, Apache signals its whole group.
  const apache = start('apache2', ['-d', site, '-f', join(site, 'httpd.conf'), '-DFOREGROUND'], 'apache2', { detached: true });
  apache.stopSignal = 'SIGTERM';
  try {
    await acceptsWithin(port, 10000, apache);
  } catch (e) {
    throw new Error(`${e.message}\n${existsSync(join(site, 'error.log')) ? readFileSync(join(site, 'error.log'), 'utf8') : ''}`);
  }

  const listen = await freePort();
  const admin = await freePort();
  const config = join(dir, 'tether-page.toml');
  writeFileSync(config, `[server]
listen = ["127.0.0.1:${listen}"]
admin_listen = "127.0.0.1:${admin}"

[[vhost]]
hosts = ["*"]
origin = "http://127.0.0.1:${port}"

[vhost.persistent]
enabled = true
paths = ["*.pphp"]
mode = "message"
page_sessions = true
message_format = "form"
`);
  const tether = start(TETHER, ['run', '-c', config], 'tether (page sessions)');
  await acceptsWithin(listen, 10000, tether);
  const pageRelay = await startRelay(listen);
  relays.push(pageRelay);
  return {
    relay: pageRelay,
    /** Polls PHP's events (one JSON object a line) until `done(events)` (bounded). */
    async waitForEvents(done, timeoutMs = 10000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const list = readFileSync(events, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
        if (done(list)) return list;
        if (Date.now() > deadline) {
          throw new Error(`PHP's events are not complete:\n${list.slice(-20).map((e) => JSON.stringify(e)).join('\n')}\n`
            + `tether stderr:\n${tether.stderrText().slice(-4000)}\napache error.log:\n${readFileSync(join(site, 'error.log'), 'utf8')}`);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

/**
 * docs/php.md's page session script (its ```php block that calls
 * HTTPSocket.page()), logging its events as page.pphp does.
 */
function docsPageScript() {
  const doc = readFileSync(resolve(REPO, 'docs', 'php.md'), 'utf8');
  const script = doc.split('```php\n').slice(1).map((b) => b.split('```')[0]).find((b) => b.includes('HTTPSocket.page()'));
  assert.ok(script, 'docs/php.md has no PHP block with HTTPSocket.page()');
  const log = `<?php file_put_contents(__DIR__ . '/../state/events.log', json_encode(['event' => $_SERVER['HTTP_SESSION_EVENT'] ?? '-', `
    + `'sid' => $_SERVER['HTTP_SESSIONID'] ?? '-', 'type' => $_SERVER['CONTENT_TYPE'] ?? '', 'post' => $_POST]) . "\n", FILE_APPEND | LOCK_EX); ?>`;
  return log + script;
}

/** tether's configuration: the test origin, and sessions on the worker. */
function tetherConfig(listen, admin) {
  return `[server]
listen = ["127.0.0.1:${listen}"]
admin_listen = "127.0.0.1:${admin}"

[[vhost]]
hosts = ["*"]
origin = "http://127.0.0.1:${origin.address().port}"

[vhost.persistent]
enabled = true
paths = ["*.pphp"]
workers = ["http://127.0.0.1:${worker.port}"]
`;
}

function start(bin, args, name, { detached = false } = {}) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_LOG: 'info', ...process.env }, detached });
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
