// HTTPSocket: a persistent, resumable line session with a tether gateway,
// carried over WebSocket (tether SPEC 3 and 4). Plain ES module, no
// dependencies, no build step. Usage and behaviour: docs/httpsocket.md.
//
//   const socket = new HTTPSocket('/chat.pphp');
//   socket.online = (e) => console.log('line', e.detail);
//   socket.send('hello');
//   const line = await socket.read();
//   socket.close();
//
//   // A page that is itself the session (SPEC 12): the gateway put
//   // <meta name="tether-session" content="<SessionID>"> into it.
//   const page = HTTPSocket.page(); // also document.defaultHTMLSocket
//   page.send({ name: 'Ann', age: 7 }); // one line: name=Ann&age=7
//
// How it keeps the page's view whole across drops: it counts the lines it
// received (`received`) and keeps every line it sent until the gateway
// confirms it (the resend buffer). On an unexpected close it reconnects
// with backoff and resumes with `sid=<id>&received=<n>`; the gateway
// replays the lines after n and answers with its own count m of this
// client's lines, and the socket resends its lines after m.

const SUBPROTOCOL = 'persistent';
const EVENTS = ['open', 'line', 'reconnecting', 'resumed', 'close', 'sessionlost'];

// Close codes after which a new connection may resume the session: the
// connection went away, the session did not end (1006: dropped without a
// close frame; 1012: the gateway is restarting, SPEC 8).
const RETRY_CODES = new Set([1001, 1005, 1006, 1011, 1012, 1013, 1014]);

const DEFAULTS = {
  initialDelay: 100, // ms before the first reconnection attempt (then doubled)
  maxDelay: 5000, // ms, the cap of the backoff
  maxAttempts: 30, // failed attempts in a row before giving up (~2.5 min)
  openTimeout: 10000, // ms for a connection to bring the gateway's open record
  ackInterval: 500, // ms between acks while lines arrive (SPEC 3: <= 1 s)
  maxUnackedBytes: 16 * 1024 * 1024, // resend buffer size that triggers a resync
  queueLines: true, // queue lines for read() when no read() is pending
  WebSocket: globalThis.WebSocket, // the WebSocket class (tests may inject one)
};

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// SPEC 7: a SessionID is 22 to 64 characters of [A-Za-z0-9_-].
const SESSION_ID = /^[A-Za-z0-9_-]{22,64}$/;
// The meta tag the gateway inserts into a page that is a session (SPEC 12).
const META_NAME = 'tether-session';

// Set by HTTPSocket.page() around its `new HTTPSocket(...)`: the page's
// SessionID, which the constructor attaches to instead of opening a session.
let attachTo = null;

export class HTTPSocket extends EventTarget {
  /**
   * @param {string} url ws://, wss://, http:// or https:// (mapped to ws/wss);
   *   relative URLs resolve against the page's location.
   * @param {object} [options] see DEFAULTS.
   */
  constructor(url, options = {}) {
    super();
    const pageSession = attachTo;
    attachTo = null;
    this.url = toWebSocketUrl(url);
    this.options = { ...DEFAULTS };
    for (const [key, value] of Object.entries(options)) {
      if (value !== undefined) this.options[key] = value;
    }
    if (typeof this.options.WebSocket !== 'function') {
      throw new TypeError('HTTPSocket needs a WebSocket implementation');
    }
    this.sessionId = null; // the gateway's SessionID, once known
    this.status = null; // status of the worker's answer that opened the session
    this.initialBody = null; // the opening answer's body (a string; never a line)
    this.received = 0; // lines received from the gateway (channel lines)
    this.readyState = 'connecting'; // connecting | open | reconnecting | closing | closed
    this.closeCode = null; // the close code that ended the socket, once closed
    this.closeReason = null; // its reason, e.g. 'worker status 410' (SPEC 6)

    this._handlers = {}; // on<event> properties
    this._conn = null; // the current connection: { ws, record, opened, timer }
    this._haveInitial = false; // the whole initial body arrived
    this._sent = 0; // lines the page sent, numbered from 1
    this._resend = []; // lines _sent - _resend.length + 1 .. _sent, unconfirmed
    this._resendBytes = 0;
    this._lines = []; // received lines waiting for read()
    this._reads = []; // pending read()s: { resolve, reject }
    this._endError = null; // why the socket closed, for read(); null: normal end
    this._attempt = 0; // failed connection attempts in a row
    this._timer = null; // backoff timer
    this._ackTimer = null;
    this._acked = 0; // the count the gateway last heard from us
    this._ending = false; // close() was called
    this._quiet = false; // a resync: no reconnecting/resumed events
    this._attaching = false; // a page session not attached yet: its first attach emits open
    if (pageSession !== null) {
      // SPEC 12: the session exists (the page was its initial body); attach
      // to it as a resume with count 0.
      this.sessionId = pageSession;
      this.initialBody = '';
      this._haveInitial = true;
      this._attaching = true;
    }
    this._connect();
  }

  /**
   * The page's own session (SPEC 12), attached over WebSocket at the page's
   * URL: one object per page, also `document.defaultHTMLSocket`. Reads the
   * `<meta name="tether-session">` tag the gateway inserted; throws on a page
   * without one. `options` apply on the first call (later calls may repeat
   * them, not change them).
   */
  static page(options = {}) {
    const doc = globalThis.document;
    if (!doc || typeof doc.querySelector !== 'function') {
      throw new Error('HTTPSocket.page() needs a document: it reads the page\'s <meta name="tether-session"> tag');
    }
    const existing = Object.getOwnPropertyDescriptor(doc, 'defaultHTMLSocket')?.value;
    if (existing) {
      for (const [key, value] of Object.entries(options ?? {})) {
        if (value !== undefined && !Object.is(existing.options?.[key], value)) {
          throw new Error(`HTTPSocket.page(): the page's session already exists; option ${key} cannot change`);
        }
      }
      return existing;
    }
    const meta = doc.querySelector(`meta[name="${META_NAME}"]`);
    if (!meta) {
      throw new Error('HTTPSocket.page(): this page has no <meta name="tether-session"> tag; '
        + 'it was not opened as a session by a tether gateway with page_sessions = true');
    }
    const sessionId = (meta.getAttribute('content') ?? '').trim();
    if (!SESSION_ID.test(sessionId)) {
      throw new Error(`HTTPSocket.page(): the <meta name="tether-session"> tag holds no SessionID ("${sessionId}")`);
    }
    const loc = globalThis.location;
    if (!loc) throw new Error('HTTPSocket.page() needs the page\'s location');
    const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
    attachTo = sessionId;
    let socket;
    try {
      socket = new this(`${scheme}//${loc.host}${loc.pathname}${loc.search}`, options ?? {});
    } finally {
      attachTo = null;
    }
    Object.defineProperty(doc, 'defaultHTMLSocket', {
      value: socket,
      writable: false,
      enumerable: true,
      configurable: true,
    });
    return socket;
  }

  /**
   * Sends one line: a string without LF, or a form message (a plain object,
   * URLSearchParams, or FormData without files) form-encoded as one line.
   * Queued while (re)connecting.
   */
  send(message) {
    if (this._ending || this.readyState === 'closed') {
      throw new Error('HTTPSocket is closed');
    }
    const line = typeof message === 'string' ? message : formLine(message);
    if (line.includes('\n')) throw new TypeError('a line must not contain LF');
    this._sent += 1;
    this._resend.push(line);
    this._resendBytes += encoder.encode(line).length + 1;
    const conn = this._conn;
    if (conn && conn.opened) {
      conn.ws.send(line);
      if (this._resendBytes > this.options.maxUnackedBytes) this._resync();
    }
  }

  /**
   * The next line, in order. Resolves to null once the session ended
   * normally and every line was read; rejects (error.code = close code)
   * once it failed.
   */
  read() {
    if (this._lines.length > 0) return Promise.resolve(this._lines.shift());
    if (this.readyState === 'closed') {
      return this._endError ? Promise.reject(this._endError) : Promise.resolve(null);
    }
    return new Promise((resolve, reject) => this._reads.push({ resolve, reject }));
  }

  /** Ends the session (WebSocket close 1000); unsent lines are discarded. */
  close() {
    if (this._ending || this.readyState === 'closed') return;
    this._ending = true;
    this.readyState = 'closing';
    const conn = this._conn;
    if (conn && conn.opened) {
      conn.ws.close(1000);
    } else if (!conn && this._timer !== null && this.sessionId !== null) {
      // Waiting to reconnect: resume once, only to end the session.
      clearTimeout(this._timer);
      this._timer = null;
      this._connect();
    } else if (!conn || this.sessionId === null) {
      // No session yet (or none to end): stop here.
      this._finish('close', { code: 1000, reason: 'closed' });
    }
    // else: resuming; _opened() ends the session as soon as it is back.
  }

  /** Test hook: drops the connection (close 4000 detaches on the gateway). */
  _dropForTest(code = 4000) {
    const conn = this._conn;
    if (!conn || this._ending) return;
    this._detach(conn, code, 'dropped for test');
    this._reconnect(1006, 'dropped for test');
  }

  // --- connections ---------------------------------------------------------

  _connect() {
    const ws = new this.options.WebSocket(this.url, SUBPROTOCOL);
    ws.binaryType = 'arraybuffer';
    const conn = { ws, record: false, opened: false, initial: 0, timer: null };
    this._conn = conn;
    conn.timer = setTimeout(() => {
      if (this._conn !== conn) return;
      this._detach(conn, 4000, 'open timeout');
      this._lost(1006, 'open timeout');
    }, this.options.openTimeout);
    ws.onopen = () => {
      if (ws.protocol !== SUBPROTOCOL) {
        return this._protocolError(conn, 'the server did not accept the persistent subprotocol');
      }
      // The first message is always a control record (SPEC 3).
      const record = this.sessionId === null ? '' : `sid=${this.sessionId}&received=${this.received}`;
      ws.send(encoder.encode(record));
    };
    ws.onmessage = (event) => this._onMessage(conn, event.data);
    ws.onclose = (event) => this._onClose(conn, event.code, event.reason);
    ws.onerror = () => {
      // Browsers follow an error with a close event (1006); some WebSocket
      // implementations give none when the connection cannot be made.
      if (ws.readyState === 0 && this._conn === conn) {
        this._detach(conn);
        this._lost(1006, 'connection failed');
      }
    };
  }

  /** Forgets a connection: no more events from it; closes it with `code`. */
  _detach(conn, code, reason) {
    clearTimeout(conn.timer);
    conn.ws.onopen = conn.ws.onmessage = conn.ws.onclose = conn.ws.onerror = null;
    if (this._conn === conn) this._conn = null;
    if (code !== undefined) {
      try {
        conn.ws.close(code, reason);
      } catch {
        // already closing
      }
    }
  }

  _onMessage(conn, data) {
    if (this._conn !== conn) return;
    if (typeof data !== 'string') {
      if (!conn.record) this._onOpenRecord(conn, decoder.decode(data));
      return; // later control records: none defined yet, ignored
    }
    if (conn.opened) return this._onLine(conn, data);
    if (conn.record && conn.initial > 0) {
      // The initial body: one text frame, byte-exact, never a line.
      if (encoder.encode(data).length !== conn.initial) {
        return this._protocolError(conn, 'initial body of the wrong length');
      }
      this.initialBody = data;
      this._haveInitial = true;
      return this._opened(conn, 0, false);
    }
    this._protocolError(conn, 'a text frame before the open record');
  }

  _onOpenRecord(conn, text) {
    const fields = new URLSearchParams(text);
    const sid = fields.get('sid');
    const received = count(fields.get('received'));
    const status = count(fields.get('status'));
    const initial = count(fields.get('initial'));
    if (!sid || received === null || status === null || initial === null) {
      return this._protocolError(conn, `bad open record "${text}"`);
    }
    conn.record = true;
    if (this._attaching) {
      // A page session's first attach (SPEC 12): the page's open.
      if (sid !== this.sessionId || initial !== 0) {
        return this._protocolError(conn, `attach answered with "${text}"`);
      }
      this._attaching = false;
      this.status = status;
      return this._opened(conn, received, false);
    }
    if (this.sessionId === null) {
      this.sessionId = sid;
      this.status = status;
      conn.initial = initial;
      if (initial > 0) return; // the initial body's frame comes next
      this.initialBody = '';
      this._haveInitial = true;
      return this._opened(conn, received, false);
    }
    if (sid !== this.sessionId || initial !== 0) {
      return this._protocolError(conn, `resume answered with "${text}"`);
    }
    this._opened(conn, received, true);
  }

  /** The session is (again) open on `conn`; the gateway has `gatewayCount` of our lines. */
  _opened(conn, gatewayCount, resumed) {
    clearTimeout(conn.timer);
    const confirmed = this._sent - this._resend.length;
    if (gatewayCount < confirmed || gatewayCount > this._sent) {
      // The gateway would lose or invent lines: never a silent gap.
      return this._protocolError(conn, `gateway counts ${gatewayCount} of our lines, we sent ${this._sent}`);
    }
    this._trimResend(gatewayCount - confirmed);
    conn.opened = true;
    this._attempt = 0;
    this._acked = this.received; // the resume record told the gateway
    if (this._ending) {
      conn.ws.close(1000);
      return;
    }
    for (const line of this._resend) conn.ws.send(line);
    this.readyState = 'open';
    const quiet = this._quiet;
    this._quiet = false;
    if (!resumed) {
      this._emit('open', { sessionId: this.sessionId, status: this.status, initialBody: this.initialBody });
    } else if (!quiet) {
      this._emit('resumed', { sessionId: this.sessionId, received: this.received, resent: this._resend.length });
    }
  }

  _onLine(conn, line) {
    this.received += 1;
    if (this._ackTimer === null) {
      this._ackTimer = setTimeout(() => this._ack(), this.options.ackInterval);
    }
    this._emit('line', line);
    if (this._reads.length > 0) this._reads.shift().resolve(line);
    else if (this.options.queueLines) this._lines.push(line);
  }

  _ack() {
    this._ackTimer = null;
    const conn = this._conn;
    if (!conn || !conn.opened || this.received === this._acked) return;
    conn.ws.send(encoder.encode(`ack=${this.received}`));
    this._acked = this.received;
  }

  _onClose(conn, code, reason) {
    if (this._conn !== conn) return;
    this._detach(conn);
    if (this._ending || code === 1000) {
      // close() or the session ended normally (worker end, DELETE, grace).
      return this._finish('close', { code, reason }, code === 1000 ? null : closeError(code, reason));
    }
    if (code === 4409) return this._finish('close', { code, reason }, closeError(code, reason));
    if (code === 4410) return this._finish('sessionlost', { code, reason }, closeError(code, reason));
    if (code === 4502) return this._finish('close', workerEnd(code, reason), closeError(code, reason));
    if (RETRY_CODES.has(code)) return this._lost(code, reason);
    this._finish('close', { code, reason, error: `session failed: ${code} ${reason}`.trim() }, closeError(code, reason));
  }

  /** The connection went away; the session may still be resumed. */
  _lost(code, reason) {
    if (this._ending) return this._finish('close', { code, reason }, closeError(code, reason));
    this._reconnect(code, reason);
  }

  _reconnect(code, reason) {
    if (this.sessionId !== null && !this._haveInitial) {
      // SPEC 2: without the whole initial body a client must not resume.
      return this._finish('sessionlost', { code, reason: 'connection lost before the initial body arrived' },
        closeError(code, 'initial body lost'));
    }
    if (this._attempt >= this.options.maxAttempts) {
      const detail = { code, reason, error: `gave up after ${this._attempt} attempts` };
      const error = closeError(code, detail.error);
      return this.sessionId === null ? this._finish('close', detail, error) : this._finish('sessionlost', detail, error);
    }
    this._attempt += 1;
    const { initialDelay, maxDelay } = this.options;
    const ceiling = Math.min(maxDelay, initialDelay * 2 ** (this._attempt - 1));
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2); // equal jitter
    this._quiet = false;
    this.readyState = 'reconnecting';
    this._emit('reconnecting', { attempt: this._attempt, delay, code, reason });
    if (this.readyState !== 'reconnecting') return; // a listener called close()
    this._timer = setTimeout(() => {
      this._timer = null;
      this._connect();
    }, delay);
  }

  /** Resume at once on a fresh connection, only to learn the gateway's count. */
  _resync() {
    this._detach(this._conn, 4000, 'resync');
    this._quiet = true;
    this._connect();
  }

  _protocolError(conn, message) {
    // Nothing sensible can follow: end the session on the gateway too.
    this._detach(conn, 1000);
    this._finish('close', { code: 1002, reason: message, error: message }, closeError(1002, message));
  }

  _finish(type, detail, error = null) {
    if (this.readyState === 'closed') return;
    if (this._conn) this._detach(this._conn, 1000);
    clearTimeout(this._timer);
    clearTimeout(this._ackTimer);
    this._timer = this._ackTimer = null;
    this.readyState = 'closed';
    this.closeCode = detail.code;
    this.closeReason = detail.reason ?? '';
    this._endError = error;
    this._resend = [];
    this._resendBytes = 0;
    for (const read of this._reads.splice(0)) {
      if (error) read.reject(error);
      else read.resolve(null);
    }
    this._emit(type, detail);
  }

  _trimResend(n) {
    for (const line of this._resend.splice(0, n)) this._resendBytes -= encoder.encode(line).length + 1;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// on<event> properties, as on WebSocket: one handler each, a listener.
for (const type of EVENTS) {
  Object.defineProperty(HTTPSocket.prototype, `on${type}`, {
    get() {
      return this._handlers[type] ?? null;
    },
    set(handler) {
      if (this._handlers[type]) this.removeEventListener(type, this._handlers[type]);
      this._handlers[type] = typeof handler === 'function' ? handler : null;
      if (this._handlers[type]) this.addEventListener(type, this._handlers[type]);
    },
  });
}

function toWebSocketUrl(url) {
  const u = new URL(url, globalThis.location?.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  else if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new SyntaxError(`HTTPSocket: unsupported URL scheme ${u.protocol}`);
  }
  u.hash = '';
  return u.href;
}

/**
 * A form message as one line (SPEC 12): application/x-www-form-urlencoded,
 * as URLSearchParams.toString() gives, so it never holds an LF.
 */
function formLine(message) {
  if (message instanceof URLSearchParams || tag(message) === 'URLSearchParams') {
    return message.toString();
  }
  if (tag(message) === 'FormData') {
    const params = new URLSearchParams();
    for (const [name, value] of message.entries()) {
      if (typeof value !== 'string') {
        throw new TypeError(`HTTPSocket.send(): FormData field "${name}" holds a file; `
          + 'a form message carries text fields only (nothing was sent)');
      }
      params.append(name, value);
    }
    return params.toString();
  }
  if (message !== null && typeof message === 'object') {
    // A plain object: its prototype is an Object.prototype (of any realm,
    // e.g. an iframe's) or null; arrays, Maps, class instances are not.
    const proto = Object.getPrototypeOf(message);
    if (proto === null || (Object.getPrototypeOf(proto) === null && !Array.isArray(message))) {
      const params = new URLSearchParams();
      for (const [name, value] of Object.entries(message)) {
        if (value === undefined) continue;
        for (const item of Array.isArray(value) ? value : [value]) {
          if (!['string', 'number', 'boolean', 'bigint'].includes(typeof item)) {
            throw new TypeError(`HTTPSocket.send(): field "${name}" is ${item === null ? 'null' : typeof item}; `
              + 'a form field is a string, number, boolean or bigint, or an array of them (nothing was sent)');
          }
          params.append(name, String(item));
        }
      }
      return params.toString();
    }
  }
  throw new TypeError('HTTPSocket.send(): a message is a string (a line), a plain object, URLSearchParams or FormData');
}

function tag(value) {
  return Object.prototype.toString.call(value).slice(8, -1);
}

function count(value) {
  return value !== null && /^[0-9]{1,15}$/.test(value) ? Number(value) : null;
}

// 4502 (SPEC 6): the worker failed the session: `worker status <code>`
// (a message-mode worker's non-2xx answer), `worker unreachable`, or a
// gateway's reason such as `not utf-8`. The session is over, not lost: a
// new one would meet the same worker, so the page is told why rather than
// asked to start anew.
function workerEnd(code, reason) {
  const detail = { code, reason, error: `worker failed: ${reason || code}` };
  const status = /^worker status ([0-9]{3})$/.exec(reason);
  if (status) detail.workerStatus = Number(status[1]);
  if (reason === 'worker unreachable') detail.workerUnreachable = true;
  return detail;
}

function closeError(code, reason) {
  const error = new Error(`HTTPSocket closed: ${code}${reason ? ` ${reason}` : ''}`);
  error.code = code;
  return error;
}
