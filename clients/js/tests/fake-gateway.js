// A scripted stand-in for tether's WebSocket transport (SPEC 3), for the
// unit tests of HTTPSocket: each test accepts connections one by one and
// plays the gateway's side by hand.

import { WebSocketServer } from 'ws';

export async function startFakeGateway() {
  const server = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    handleProtocols: (protocols) => (protocols.has('persistent') ? 'persistent' : false),
  });
  await new Promise((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const connections = new AsyncQueue();
  server.on('connection', (ws, req) => connections.push(new FakeConnection(ws, req)));
  const { port } = server.address();
  return {
    port,
    url: `ws://127.0.0.1:${port}/chat.pphp`,
    /** The next connection (the order they came in). */
    accept(timeoutMs = 5000) {
      return connections.shift(timeoutMs, 'no connection');
    },
    /** Resolves true if a connection arrives within `ms`, else false. */
    async connectsWithin(ms) {
      try {
        await this.accept(ms);
        return true;
      } catch {
        return false;
      }
    },
    close() {
      for (const client of server.clients) client.terminate();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

export class FakeConnection {
  constructor(ws, req) {
    this.ws = ws;
    this.path = req.url;
    this.protocol = ws.protocol;
    this._messages = new AsyncQueue();
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
    });
    ws.on('message', (data, isBinary) => {
      this._messages.push({ binary: isBinary, text: data.toString('utf8') });
    });
  }

  /** The next message from the client: { binary, text }. */
  next(timeoutMs = 5000) {
    return this._messages.shift(timeoutMs, 'no message');
  }

  /** The next message, which must be a text frame (a line). */
  async line(timeoutMs) {
    const m = await this.next(timeoutMs);
    if (m.binary) throw new Error(`expected a line, got control record "${m.text}"`);
    return m.text;
  }

  /** The next message that is a line, skipping acks. */
  async lineSkippingAcks(timeoutMs) {
    for (;;) {
      const m = await this.next(timeoutMs);
      if (!m.binary) return m.text;
      if (!m.text.startsWith('ack=')) throw new Error(`unexpected control record "${m.text}"`);
    }
  }

  /** The next message, which must be a control record. */
  async record(timeoutMs) {
    const m = await this.next(timeoutMs);
    if (!m.binary) throw new Error(`expected a control record, got line "${m.text}"`);
    return m.text;
  }

  /** Answers the first control record as the gateway does on success. */
  open({ sid = 'S'.repeat(22), received = 0, status = 200, initial = '' } = {}) {
    const k = Buffer.byteLength(initial);
    this.ws.send(Buffer.from(`sid=${sid}&received=${received}&status=${status}&initial=${k}`), { binary: true });
    if (k > 0) this.ws.send(initial, { binary: false });
  }

  sendRecord(text) {
    this.ws.send(Buffer.from(text), { binary: true });
  }

  sendLine(text) {
    this.ws.send(text, { binary: false });
  }

  close(code, reason) {
    this.ws.close(code, reason);
    return this.closed;
  }

  /** Drops the TCP connection without a close frame (the client sees 1006). */
  drop() {
    this.ws.terminate();
    return this.closed;
  }
}

/** A FIFO whose shift() waits (bounded) for the next item. */
class AsyncQueue {
  constructor() {
    this.items = [];
    this.waiters = [];
  }

  push(item) {
    if (this.waiters.length > 0) this.waiters.shift()(item);
    else this.items.push(item);
  }

  shift(timeoutMs, what) {
    if (this.items.length > 0) return Promise.resolve(this.items.shift());
    return new Promise((resolve, reject) => {
      const waiter = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(waiter), 1);
        reject(new Error(`timeout after ${timeoutMs} ms: ${what}`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }
}

export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves with the event's detail the next time `target` emits `type`. */
export function once(target, type, timeoutMs = 5000) {
  return withTimeout(
    new Promise((resolve) => target.addEventListener(type, (e) => resolve(e.detail), { once: true })),
    timeoutMs,
    `no ${type} event`,
  );
}
