// Compiled by `tsc --noEmit` (tests/package.test.js), never run: what a
// page author writes against httpsocket.d.ts type-checks, and what the
// library refuses at run time (or does not have) does not. Imported by the
// package's name, so the `exports` map's `types` is what resolves it.

import { HTTPSocket } from 'httpsocket';
import type { CloseDetail, FormFields, HTTPSocketError, HTTPSocketMessage, HTTPSocketOptions, HTTPSocketState } from 'httpsocket';

const options: HTTPSocketOptions = { initialDelay: 50, maxAttempts: 3, queueLines: false };
const socket = new HTTPSocket('/chat.pphp?room=7', options);
new HTTPSocket(new URL('wss://chat.example.test/chat.pphp'), { WebSocket: globalThis.WebSocket });

socket.onopen = (e) => {
  const body: string = e.detail.initialBody;
  const status: number = e.detail.status;
  console.log(body, status, e.detail.sessionId.length);
};
socket.online = (e) => console.log(e.detail.toUpperCase());
socket.onreconnecting = (e) => console.log(e.detail.attempt, e.detail.delay, e.detail.code);
socket.onresumed = (e) => console.log(e.detail.received + e.detail.resent);
socket.onclose = (e) => {
  const d: CloseDetail = e.detail;
  if (d.workerStatus !== undefined) console.log(d.workerStatus + 1, d.error);
};
socket.onsessionlost = null;
socket.addEventListener('line', (e) => console.log(e.detail.trim()));
socket.addEventListener('resumed', (e) => console.log(e.detail.sessionId));

socket.send('hello');
const state: HTTPSocketState = socket.readyState;
const id: string | null = socket.sessionId;
const received: number = socket.received;
console.log(state, id, received, socket.url, socket.closeCode, socket.closeReason);

async function pull(): Promise<void> {
  try {
    for (let line = await socket.read(); line !== null; line = await socket.read()) {
      console.log(line.length);
    }
  } catch (e) {
    console.log((e as HTTPSocketError).code);
  }
  socket.close();
}
void pull();

// The page is the session (SPEC 12), and form messages.
const page: HTTPSocket = HTTPSocket.page({ initialDelay: 50 });
const same: HTTPSocket | undefined = document.defaultHTMLSocket;
page.send({ name: 'Ann', age: 7, member: true, 'tags[]': ['a', 'b'], note: undefined });
page.send(new URLSearchParams({ q: 'x' }));
page.send(new FormData());
const fields: FormFields = { a: '1' };
const message: HTTPSocketMessage = fields;
page.send(message);
console.log(same?.sessionId);

// What must not type-check.
// @ts-expect-error a form field is a scalar or an array of scalars
page.send({ nested: { a: 1 } });
// @ts-expect-error a form field is not null
page.send({ a: null });
// @ts-expect-error document.defaultHTMLSocket is set by HTTPSocket.page()
document.defaultHTMLSocket = page;
// @ts-expect-error page() takes options only
HTTPSocket.page('/other.pphp');
// @ts-expect-error a line is a string
socket.send(42);
// @ts-expect-error read() may give null at the end
const notNull: Promise<string> = socket.read();
// @ts-expect-error the session's id is the gateway's, read-only
socket.sessionId = 'x';
// @ts-expect-error no such option
new HTTPSocket('/a.pphp', { reconnect: false });
// @ts-expect-error a line event's detail is a string
socket.online = (e) => e.detail.sessionId;
// @ts-expect-error readyState is one of five words
const wrong: HTTPSocketState = 'opening';
console.log(notNull, wrong);
