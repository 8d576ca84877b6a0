// Unit tests of HTTPSocket against a scripted fake gateway (test/fake-gateway.js).
// They run once with the `ws` package's client and, where Node has one
// (Node >= 22, or 20 with --experimental-websocket), once with Node's own
// browser-compatible WebSocket.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { runInNewContext } from 'node:vm';
import { WebSocket as WsWebSocket } from 'ws';

import { HTTPSocket } from '../httpsocket.js';
import { startFakeGateway, once } from './fake-gateway.js';

const SID = 'abcdefghijklmnopqrstuv';
const IMPLEMENTATIONS = [['ws', WsWebSocket]];
if (typeof globalThis.WebSocket === 'function') IMPLEMENTATIONS.push(['node', globalThis.WebSocket]);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

for (const [name, WebSocket] of IMPLEMENTATIONS) {
  describe(`HTTPSocket (${name} WebSocket)`, () => {
    let gw;
    const sockets = [];
    const open = (options = {}) => {
      const s = new HTTPSocket(gw.url, { WebSocket, initialDelay: 10, maxDelay: 50, ...options });
      sockets.push(s);
      return s;
    };
    /** A socket whose new session was opened by the fake gateway. */
    const opened = async (options, openArgs = {}) => {
      const s = open(options);
      const conn = await gw.accept();
      assert.equal(conn.protocol, 'persistent');
      assert.equal(await conn.record(), '', 'a new session starts with an empty control record');
      const opening = once(s, 'open');
      conn.open({ sid: SID, ...openArgs });
      await opening;
      return { s, conn };
    };

    before(async () => {
      gw = await startFakeGateway();
    });
    after(async () => {
      for (const s of sockets) s.close();
      await gw.close();
    });

    test('URL schemes: http(s) map to ws(s), others are refused', () => {
      const mk = (u) => {
        const s = new HTTPSocket(u, { WebSocket: class { close() {} } });
        s.close();
        return s;
      };
      assert.equal(mk('http://127.0.0.1:1/a.pphp?x=1').url, 'ws://127.0.0.1:1/a.pphp?x=1');
      assert.equal(mk('https://127.0.0.1:1/a.pphp').url, 'wss://127.0.0.1:1/a.pphp');
      assert.equal(mk('wss://127.0.0.1:1/a.pphp').url, 'wss://127.0.0.1:1/a.pphp');
      assert.throws(() => mk('ftp://127.0.0.1/a'), SyntaxError);
    });

    test('open with an initial body, then lines both ways', async () => {
      const s = open();
      const conn = await gw.accept();
      assert.equal(conn.path, '/chat.pphp');
      assert.equal(await conn.record(), '');
      s.send('queued before open');
      const opening = once(s, 'open');
      conn.open({ sid: SID, status: 201, initial: 'hello ü\nsecond line of the body\n' });
      const detail = await opening;
      assert.deepEqual(detail, { sessionId: SID, status: 201, initialBody: 'hello ü\nsecond line of the body\n' });
      assert.equal(s.readyState, 'open');
      assert.equal(s.sessionId, SID);
      assert.equal(s.status, 201);
      assert.equal(s.initialBody, 'hello ü\nsecond line of the body\n');
      assert.equal(s.received, 0, 'the initial body is not counted');
      assert.equal(await conn.line(), 'queued before open');
      s.send('hi');
      assert.equal(await conn.line(), 'hi');
      const events = [];
      s.addEventListener('line', (e) => events.push(e.detail));
      conn.sendLine('one');
      conn.sendLine('two ✓');
      assert.equal(await s.read(), 'one');
      assert.equal(await s.read(), 'two ✓');
      assert.deepEqual(events, ['one', 'two ✓']);
      assert.equal(s.received, 2);
    });

    test('send refuses LF, non-strings, and lines after close()', async () => {
      const { s, conn } = await opened();
      assert.throws(() => s.send('a\nb'), TypeError);
      assert.throws(() => s.send(42), TypeError);
      s.close();
      assert.throws(() => s.send('late'), /closed/);
      assert.equal((await conn.closed).code, 1000);
    });

    test('reads pending before lines arrive resolve in order; later lines are queued', async () => {
      const { s, conn } = await opened();
      const early = [s.read(), s.read(), s.read()];
      for (const l of ['a', 'b', 'c', 'd', 'e']) conn.sendLine(l);
      assert.deepEqual(await Promise.all(early), ['a', 'b', 'c']);
      await sleep(50);
      assert.equal(await s.read(), 'd');
      assert.equal(await s.read(), 'e');
    });

    test('acks the received count within a second while lines arrive', async () => {
      const { conn } = await opened();
      for (let i = 1; i <= 5; i++) conn.sendLine(`l${i}`);
      const sentAt = Date.now();
      assert.equal(await conn.record(2000), 'ack=5');
      assert.ok(Date.now() - sentAt <= 1000, `ack after ${Date.now() - sentAt} ms`);
      conn.sendLine('l6');
      assert.equal(await conn.record(2000), 'ack=6');
      // no new lines: no more acks
      await assert.rejects(conn.next(1200), /timeout/);
    });

    test('on<event> properties are listeners, one each', async () => {
      const s = open();
      const conn = await gw.accept();
      await conn.record();
      const seen = [];
      s.onopen = () => seen.push('first');
      s.onopen = (e) => seen.push(`open ${e.detail.sessionId}`);
      s.online = (e) => seen.push(`line ${e.detail}`);
      assert.equal(typeof s.onopen, 'function');
      const lined = once(s, 'line');
      conn.open({ sid: SID });
      conn.sendLine('x');
      await lined;
      assert.deepEqual(seen, [`open ${SID}`, 'line x']);
      s.online = null;
      assert.equal(s.online, null);
    });

    test('a dropped connection resumes with its count and resends after the gateway count', async () => {
      const { s, conn } = await opened();
      const lines = [];
      s.addEventListener('line', (e) => lines.push(e.detail));
      s.send('c1');
      s.send('c2');
      s.send('c3');
      assert.equal(await conn.line(), 'c1');
      assert.equal(await conn.line(), 'c2');
      assert.equal(await conn.line(), 'c3');
      conn.sendLine('w1');
      conn.sendLine('w2');
      await once(s, 'line');
      while (s.received < 2) await once(s, 'line');
      const reconnecting = once(s, 'reconnecting');
      await conn.drop();
      const r = await reconnecting;
      assert.equal(r.attempt, 1);
      assert.equal(r.code, 1006);
      assert.equal(s.readyState, 'reconnecting');
      s.send('c4'); // queued while reconnecting

      const again = await gw.accept();
      assert.equal(await again.record(), `sid=${SID}&received=2`);
      const resumed = once(s, 'resumed');
      // the gateway delivered c1 and c2 only (c3 was lost in the drop)
      again.open({ sid: SID, received: 2 });
      assert.deepEqual(await resumed, { sessionId: SID, received: 2, resent: 2 });
      assert.equal(await again.line(), 'c3');
      assert.equal(await again.line(), 'c4');
      again.sendLine('w3');
      s.send('c5');
      assert.equal(await again.line(), 'c5');
      assert.equal(await s.read(), 'w1');
      assert.equal(await s.read(), 'w2');
      assert.equal(await s.read(), 'w3');
      assert.deepEqual(lines, ['w1', 'w2', 'w3']);

      // a second drop: the resend buffer was trimmed to the gateway's count
      await again.drop();
      const third = await gw.accept();
      assert.equal(await third.record(), `sid=${SID}&received=3`);
      third.open({ sid: SID, received: 5 });
      await once(s, 'resumed');
      s.send('c6');
      assert.equal(await third.line(), 'c6', 'nothing before c6 is resent: the gateway has c1..c5');
    });

    test('a resume answered with a count the client cannot match fails loudly', async () => {
      const { s, conn } = await opened();
      s.send('c1');
      await conn.line();
      await conn.drop();
      const again = await gw.accept();
      await again.record();
      const closing = once(s, 'close');
      again.open({ sid: SID, received: 7 });
      const detail = await closing;
      assert.equal(detail.code, 1002);
      assert.match(detail.error, /gateway counts 7/);
      assert.equal((await again.closed).code, 1000, 'the useless session is ended');
    });

    test('1012 (gateway restarting) reconnects; the 4410 that follows is sessionlost', async () => {
      const { s, conn } = await opened();
      const reading = s.read();
      await conn.close(1012, 'restarting');
      const again = await gw.accept();
      assert.equal(await again.record(), `sid=${SID}&received=0`);
      const lost = once(s, 'sessionlost');
      again.close(4410, 'resume impossible');
      assert.deepEqual(await lost, { code: 4410, reason: 'resume impossible' });
      assert.equal(s.readyState, 'closed');
      await assert.rejects(reading, (e) => e.code === 4410);
      assert.equal(await gw.connectsWithin(200), false, 'no reconnection after 4410');
      assert.throws(() => s.send('x'), /closed/);
    });

    test('4502 from a message-mode worker is a close with the reason, never sessionlost', async () => {
      for (const [reason, extra] of [
        ['worker status 410', { workerStatus: 410 }],
        ['worker unreachable', { workerUnreachable: true }],
      ]) {
        const { s, conn } = await opened();
        let lost = false;
        s.addEventListener('sessionlost', () => (lost = true));
        conn.sendLine('before');
        const closing = once(s, 'close');
        conn.close(4502, reason);
        assert.deepEqual(await closing, { code: 4502, reason, error: `worker failed: ${reason}`, ...extra });
        assert.equal(s.closeCode, 4502);
        assert.equal(s.closeReason, reason);
        assert.equal(lost, false);
        assert.equal(await s.read(), 'before', 'the lines before the end are kept');
        await assert.rejects(s.read(), (e) => e.code === 4502 && e.message.includes(reason));
        assert.equal(await gw.connectsWithin(200), false, 'no reconnection after 4502');
      }
    });

    test('closeCode and closeReason after a normal end', async () => {
      const { s, conn } = await opened();
      assert.equal(s.closeCode, null);
      const closing = once(s, 'close');
      conn.close(1000, 'worker_end');
      await closing;
      assert.equal(s.closeCode, 1000);
      assert.equal(s.closeReason, 'worker_end');
    });

    test('4409 (taken over) closes without reconnecting', async () => {
      const { s, conn } = await opened();
      let lost = false;
      s.addEventListener('sessionlost', () => (lost = true));
      const closing = once(s, 'close');
      conn.close(4409, 'taken over');
      assert.deepEqual(await closing, { code: 4409, reason: 'taken over' });
      assert.equal(await gw.connectsWithin(200), false, 'no reconnection after 4409');
      assert.equal(lost, false);
      await assert.rejects(s.read(), (e) => e.code === 4409);
    });

    test('1000 from the gateway ends the session: remaining lines, then read() gives null', async () => {
      const { s, conn } = await opened();
      conn.sendLine('last');
      const closing = once(s, 'close');
      conn.close(1000);
      assert.equal((await closing).code, 1000);
      assert.equal(await s.read(), 'last');
      assert.equal(await s.read(), null);
      assert.equal(await gw.connectsWithin(200), false);
    });

    test('close() sends close 1000 and emits close', async () => {
      const { s, conn } = await opened();
      const pending = s.read();
      const closing = once(s, 'close');
      s.close();
      assert.equal(s.readyState, 'closing');
      assert.equal((await conn.closed).code, 1000);
      assert.equal((await closing).code, 1000);
      assert.equal(await pending, null);
      assert.equal(s.readyState, 'closed');
    });

    test('close() while reconnecting resumes once only to end the session', async () => {
      const { s, conn } = await opened({ initialDelay: 10000, maxDelay: 10000 });
      await conn.drop();
      await sleep(20);
      assert.equal(s.readyState, 'reconnecting');
      s.send('discarded');
      s.close();
      const again = await gw.accept();
      assert.equal(await again.record(), `sid=${SID}&received=0`);
      const closing = once(s, 'close');
      again.open({ sid: SID, received: 0 });
      assert.equal((await again.closed).code, 1000);
      assert.equal((await closing).code, 1000);
      await assert.rejects(again.next(100), /timeout/, 'no line is resent when ending');
    });

    test('close() before any session exists closes at once', async () => {
      const s = open();
      const conn = await gw.accept();
      assert.equal(await conn.record(), '');
      const closing = once(s, 'close');
      s.close();
      assert.equal((await closing).code, 1000);
      assert.equal(s.readyState, 'closed');
      assert.equal(await s.read(), null);
      await conn.closed;
    });

    test('a failure at open (4503) closes with the code and an error, no reconnect', async () => {
      const s = open();
      const conn = await gw.accept();
      await conn.record();
      const closing = once(s, 'close');
      conn.close(4503, 'overloaded');
      const detail = await closing;
      assert.equal(detail.code, 4503);
      assert.equal(detail.reason, 'overloaded');
      assert.match(detail.error, /4503 overloaded/);
      assert.equal(s.sessionId, null);
      assert.equal(await gw.connectsWithin(200), false);
    });

    test('a drop before the initial body arrived loses the session (SPEC 2)', async () => {
      const s = open();
      const conn = await gw.accept();
      await conn.record();
      conn.sendRecord(`sid=${SID}&received=0&status=200&initial=10`);
      const lost = once(s, 'sessionlost');
      await sleep(20);
      await conn.drop();
      assert.match((await lost).reason, /initial body/);
      assert.equal(await gw.connectsWithin(200), false);
    });

    test('_dropForTest detaches with 4000 and resumes', async () => {
      const { s, conn } = await opened();
      conn.sendLine('w1');
      assert.equal(await s.read(), 'w1');
      s._dropForTest();
      assert.equal((await conn.closed).code, 4000);
      const again = await gw.accept();
      assert.equal(await again.record(), `sid=${SID}&received=1`);
      const resumed = once(s, 'resumed');
      again.open({ sid: SID, received: 0 });
      await resumed;
      again.sendLine('w2');
      assert.equal(await s.read(), 'w2');
    });

    test('backoff gives up after maxAttempts: close for a session never opened', async () => {
      const dead = await startFakeGateway();
      const url = dead.url;
      await dead.close();
      const s = new HTTPSocket(url, { WebSocket, initialDelay: 5, maxDelay: 20, maxAttempts: 3 });
      sockets.push(s);
      const attempts = [];
      s.addEventListener('reconnecting', (e) => attempts.push(e.detail.attempt));
      const detail = await once(s, 'close');
      assert.deepEqual(attempts, [1, 2, 3]);
      assert.match(detail.error, /gave up after 3 attempts/);
    });

    test('backoff delays grow exponentially with jitter, capped by maxDelay', async () => {
      const { s, conn } = await opened({ initialDelay: 100, maxDelay: 400 });
      const delays = [];
      s.addEventListener('reconnecting', (e) => {
        delays.push(e.detail.delay);
        if (delays.length === 4) s.close();
      });
      // refuse every resume at the TCP level: the fake gateway drops it
      const refusing = (async () => {
        for (;;) {
          const c = await gw.accept(3000).catch(() => null);
          if (!c) return;
          await c.drop();
        }
      })();
      await conn.drop();
      await once(s, 'close', 5000);
      await refusing;
      assert.equal(delays.length, 4);
      const ceilings = [100, 200, 400, 400];
      delays.forEach((d, i) => assert.ok(d >= ceilings[i] / 2 && d <= ceilings[i], `delay ${i}: ${d}`));
    });

    // --- the page is the session (SPEC 12) ---------------------------------

    /**
     * A minimal stand-in for a browser page served by the gateway at
     * `pathAndQuery`: globalThis.document (with the meta tag when `sid` is
     * given) and globalThis.location, removed again when the test ends.
     */
    const fakePage = (t, { sid = SID, pathAndQuery = '/page.pphp?room=7', protocol = 'http:' } = {}) => {
      const url = new URL(`${protocol}//127.0.0.1:${gw.port}${pathAndQuery}#frag`);
      const saved = { document: Object.getOwnPropertyDescriptor(globalThis, 'document'), location: Object.getOwnPropertyDescriptor(globalThis, 'location') };
      const selectors = [];
      const document = {
        querySelector(selector) {
          selectors.push(selector);
          if (sid === null || selector !== 'meta[name="tether-session"]') return null;
          return { getAttribute: (name) => (name === 'content' ? sid : null) };
        },
      };
      const location = { protocol: url.protocol, host: url.host, pathname: url.pathname, search: url.search, hash: url.hash, href: url.href };
      Object.defineProperty(globalThis, 'document', { value: document, configurable: true, writable: true });
      Object.defineProperty(globalThis, 'location', { value: location, configurable: true, writable: true });
      t.after(() => {
        for (const [name, d] of Object.entries(saved)) {
          if (d) Object.defineProperty(globalThis, name, d);
          else delete globalThis[name];
        }
      });
      return { document, selectors };
    };
    const pageSocket = (options = {}) => {
      const s = HTTPSocket.page({ WebSocket, initialDelay: 10, maxDelay: 50, ...options });
      sockets.push(s);
      return s;
    };

    test('page(): reads the meta tag and attaches at the page URL as a resume with received=0; open, lines both ways', async (t) => {
      const { document, selectors } = fakePage(t);
      const s = pageSocket();
      assert.deepEqual(selectors, ['meta[name="tether-session"]']);
      assert.equal(s.url, `ws://127.0.0.1:${gw.port}/page.pphp?room=7`, 'the page URL without its fragment, ws:');
      assert.equal(s.sessionId, SID, 'the session is known before it attaches');
      assert.equal(s.readyState, 'connecting');
      s.send('early'); // queued until attached
      const conn = await gw.accept();
      assert.equal(conn.path, '/page.pphp?room=7');
      assert.equal(conn.protocol, 'persistent');
      assert.equal(await conn.record(), `sid=${SID}&received=0`, 'a page attaches as a resume with count 0');
      let resumedEvents = 0;
      s.addEventListener('resumed', () => resumedEvents++);
      const opening = once(s, 'open');
      conn.open({ sid: SID, received: 0, status: 200 });
      assert.deepEqual(await opening, { sessionId: SID, status: 200, initialBody: '' }, 'the first attach is the page\'s open');
      assert.equal(s.readyState, 'open');
      assert.equal(s.status, 200);
      assert.equal(s.initialBody, '', 'the initial body was the page itself');
      assert.equal(await conn.line(), 'early');
      conn.sendLine('w1 written before the page attached');
      conn.sendLine('w2');
      assert.equal(await s.read(), 'w1 written before the page attached');
      assert.equal(await s.read(), 'w2');
      assert.equal(s.received, 2);
      assert.equal(document.defaultHTMLSocket, s);

      // A drop resumes like any HTTPSocket: count 2, resumed (not open) again.
      await conn.drop();
      const again = await gw.accept();
      assert.equal(await again.record(), `sid=${SID}&received=2`);
      const resumed = once(s, 'resumed');
      again.open({ sid: SID, received: 1 });
      assert.deepEqual(await resumed, { sessionId: SID, received: 2, resent: 0 });
      assert.equal(resumedEvents, 1);
      s.send('after the drop');
      assert.equal(await again.line(), 'after the drop');
      const closing = once(s, 'close');
      s.close();
      assert.equal((await again.closed).code, 1000, 'close() ends the page session');
      assert.equal((await closing).code, 1000);
    });

    test('page(): an https page attaches over wss', (t) => {
      fakePage(t, { protocol: 'https:', pathAndQuery: '/app/x.pphp' });
      const s = HTTPSocket.page({ WebSocket: class { close() {} }, openTimeout: 20 });
      assert.equal(s.url, `wss://127.0.0.1:${gw.port}/app/x.pphp`);
      s.close();
      assert.equal(s.readyState, 'closing', 'a close before the attach waits to end the session');
    });

    test('page(): twice gives the same object, also document.defaultHTMLSocket; options may be repeated, not changed', async (t) => {
      const { document } = fakePage(t);
      const s = pageSocket({ ackInterval: 200 });
      assert.equal(HTTPSocket.page(), s);
      assert.equal(HTTPSocket.page({ ackInterval: 200 }), s);
      assert.equal(document.defaultHTMLSocket, s);
      assert.throws(() => HTTPSocket.page({ ackInterval: 300 }), /already exists; option ackInterval cannot change/);
      assert.throws(() => {
        document.defaultHTMLSocket = null; // modules are strict: a TypeError
      }, TypeError, 'read-only');
      const conn = await gw.accept();
      assert.equal(await conn.record(), `sid=${SID}&received=0`);
      assert.equal(await gw.connectsWithin(100), false, 'one connection for the page, however often page() is called');
      s.close();
    });

    test('page(): a page without the meta tag, or with a malformed one, throws a clear error and connects nowhere', async (t) => {
      const { document } = fakePage(t, { sid: null });
      assert.throws(() => HTTPSocket.page({ WebSocket }), (e) => e instanceof Error
        && /no <meta name="tether-session"> tag/.test(e.message) && /page_sessions = true/.test(e.message));
      assert.equal(document.defaultHTMLSocket, undefined);
      assert.equal(await gw.connectsWithin(100), false);
      for (const bad of ['', 'short', 'x'.repeat(65), 'abcdefghijklmnopqrstu&received=9']) {
        fakePage(t, { sid: bad });
        assert.throws(() => HTTPSocket.page({ WebSocket }), /holds no SessionID/);
      }
      delete globalThis.document;
      assert.throws(() => HTTPSocket.page({ WebSocket }), /needs a document/);
    });

    test('page(): an attach answered with 4410 (the page outlived its session) is sessionlost', async (t) => {
      fakePage(t);
      const s = pageSocket();
      const conn = await gw.accept();
      await conn.record();
      const lost = once(s, 'sessionlost');
      conn.close(4410, 'resume impossible');
      assert.deepEqual(await lost, { code: 4410, reason: 'resume impossible' });
      assert.equal(await gw.connectsWithin(200), false);
    });

    test('page(): close() before the attach attaches only to end the session (1000), no open event', async (t) => {
      fakePage(t);
      const s = pageSocket();
      let opened = false;
      s.addEventListener('open', () => (opened = true));
      s.send('discarded');
      const conn = await gw.accept();
      s.close();
      assert.equal(await conn.record(), `sid=${SID}&received=0`);
      const closing = once(s, 'close');
      conn.open({ sid: SID });
      assert.equal((await conn.closed).code, 1000, 'the page session is ended on the gateway');
      assert.equal((await closing).code, 1000);
      assert.equal(opened, false);
      await assert.rejects(conn.next(100), /timeout/, 'no line is sent when ending');
    });

    test('page(): a failed first attach is retried with received=0, then opens', async (t) => {
      fakePage(t);
      const s = pageSocket();
      const first = await gw.accept();
      assert.equal(await first.record(), `sid=${SID}&received=0`);
      await first.drop();
      const second = await gw.accept();
      assert.equal(await second.record(), `sid=${SID}&received=0`);
      const opening = once(s, 'open');
      second.open({ sid: SID });
      assert.equal((await opening).sessionId, SID);
      s.close();
    });

    test('send(): a plain object, URLSearchParams or FormData is one form-encoded line', async () => {
      const { s, conn } = await opened();
      s.send({ name: 'Ann Lee', note: 'a&b=c\nline two', n: 7, ok: true, big: 10n, skipped: undefined, 'tags[]': ['x', 'y'] });
      assert.equal(await conn.line(), 'name=Ann+Lee&note=a%26b%3Dc%0Aline+two&n=7&ok=true&big=10&tags%5B%5D=x&tags%5B%5D=y');
      const params = new URLSearchParams([['q', 'ü €'], ['q', '2']]);
      s.send(params);
      assert.equal(await conn.line(), params.toString());
      assert.equal(params.toString(), 'q=%C3%BC+%E2%82%AC&q=2');
      const form = new FormData();
      form.append('city', 'Köln\r\n');
      form.append('empty', '');
      s.send(form);
      assert.equal(await conn.line(), 'city=K%C3%B6ln%0D%0A&empty=');
      s.send({});
      assert.equal(await conn.line(), '', 'an empty form is an empty line');
      s.send(Object.assign(Object.create(null), { a: '1' }));
      assert.equal(await conn.line(), 'a=1');
      s.send(runInNewContext('({ b: "2", c: [3, 4] })'));
      assert.equal(await conn.line(), 'b=2&c=3&c=4', 'a plain object of another realm (an iframe\'s)');
      s.send('plain line');
      assert.equal(await conn.line(), 'plain line');
    });

    test('send(): a FormData with a file, a non-scalar field or a non-form object throws; nothing is sent', async () => {
      const { s, conn } = await opened();
      const form = new FormData();
      form.append('name', 'Ann');
      form.append('upload', new Blob(['data']), 'data.txt');
      assert.throws(() => s.send(form), (e) => e instanceof TypeError && /FormData field "upload" holds a file/.test(e.message));
      if (typeof File === 'function') {
        const withFile = new FormData();
        withFile.append('f', new File(['x'], 'x.txt'));
        assert.throws(() => s.send(withFile), /field "f" holds a file/);
      }
      assert.throws(() => s.send({ a: { nested: 1 } }), /field "a" is object/);
      assert.throws(() => s.send({ a: null }), /field "a" is null/);
      assert.throws(() => s.send({ a: new Blob(['x']) }), /field "a" is object/);
      class Fields {
        constructor() {
          this.a = '1';
        }
      }
      for (const bad of [42, null, undefined, ['a', 'b'], runInNewContext('[1]'), new Map([['a', '1']]), new Date(0), new Fields(), Object.create({ a: '1' })]) {
        assert.throws(() => s.send(bad), TypeError, String(bad));
      }
      s.send('marker');
      assert.equal(await conn.line(), 'marker', 'none of the refused messages was sent');
      conn.sendLine('w1');
      await s.read();
      await conn.drop();
      const again = await gw.accept();
      await again.record();
      again.open({ sid: SID, received: 0 });
      assert.equal(await again.line(), 'marker', 'and none was counted: only the marker is resent');
      await assert.rejects(again.next(100), /timeout/);
    });

    test('a resend buffer over maxUnackedBytes resyncs quietly', async () => {
      const { s, conn } = await opened({ maxUnackedBytes: 20 });
      let noisy = 0;
      s.addEventListener('reconnecting', () => noisy++);
      s.addEventListener('resumed', () => noisy++);
      s.send('0123456789');
      s.send('0123456789'); // 22 bytes with LFs: resync
      assert.equal(await conn.line(), '0123456789');
      assert.equal(await conn.line(), '0123456789');
      assert.equal((await conn.closed).code, 4000);
      const again = await gw.accept();
      assert.equal(await again.record(), `sid=${SID}&received=0`);
      again.open({ sid: SID, received: 2 });
      s.send('after');
      assert.equal(await again.line(), 'after');
      assert.equal(noisy, 0);
    });
  });
}
