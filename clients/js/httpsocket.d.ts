// Type declarations of httpsocket.js (docs/httpsocket.md). Checked by
// `tsc --noEmit` in tests/package.test.js, which also compares the members
// declared here with those of the module.

/** A WebSocket class as the browser's (or Node's, or the `ws` package's). */
export interface WebSocketClass {
  new (url: string, protocols?: string | string[]): WebSocketLike;
}

/** What HTTPSocket uses of a WebSocket. */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly protocol: string;
  send(data: string | ArrayBuffer | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
}

export interface HTTPSocketOptions {
  /** ms before the first reconnection attempt, then doubled (default 100). */
  initialDelay?: number;
  /** ms, the cap of the backoff (default 5000). */
  maxDelay?: number;
  /** Failed attempts in a row before giving up (default 30). */
  maxAttempts?: number;
  /** ms for a connection to bring the gateway's open record (default 10000). */
  openTimeout?: number;
  /** ms between acks while lines arrive (default 500). */
  ackInterval?: number;
  /** Resend buffer size, in UTF-8 bytes, that triggers a resync (default 16 MiB). */
  maxUnackedBytes?: number;
  /** Queue received lines for read() when no read() is pending (default true). */
  queueLines?: boolean;
  /** The WebSocket class (default globalThis.WebSocket). */
  WebSocket?: WebSocketClass;
}

export type HTTPSocketState = 'connecting' | 'open' | 'reconnecting' | 'closing' | 'closed';

export interface OpenDetail {
  sessionId: string;
  status: number;
  initialBody: string;
}

export interface ReconnectingDetail {
  attempt: number;
  delay: number;
  code: number;
  reason: string;
}

export interface ResumedDetail {
  sessionId: string;
  received: number;
  /** Lines of the page the gateway lacked, sent again. */
  resent: number;
}

export interface CloseDetail {
  code: number;
  reason: string;
  /** What failed, when the end was not normal. */
  error?: string;
  /** 4502 `worker status <code>`: the worker's status. */
  workerStatus?: number;
  /** 4502 `worker unreachable`. */
  workerUnreachable?: true;
}

export interface HTTPSocketEventMap {
  open: CustomEvent<OpenDetail>;
  line: CustomEvent<string>;
  reconnecting: CustomEvent<ReconnectingDetail>;
  resumed: CustomEvent<ResumedDetail>;
  close: CustomEvent<CloseDetail>;
  sessionlost: CustomEvent<CloseDetail>;
}

/** A form field's value: sent as its string form. */
export type FormValue = string | number | boolean | bigint;

/**
 * A form message as a plain object (SPEC 12): each field a value or an
 * array of values (a repeated field; name it `tags[]` for PHP's arrays);
 * `undefined` fields are left out.
 */
export type FormFields = { readonly [name: string]: FormValue | readonly FormValue[] | undefined };

/**
 * What send() takes: a line (a string without LF), or a form message sent
 * form-encoded (application/x-www-form-urlencoded) as one line. A FormData
 * must hold no File or Blob (send() throws a TypeError).
 */
export type HTTPSocketMessage = string | FormFields | URLSearchParams | FormData;

/** The rejection of read() after a failed end. */
export interface HTTPSocketError extends Error {
  /** The close code, e.g. 4409, 4410, 4502. */
  code: number;
}

/**
 * A persistent, resumable line session with a tether gateway over
 * WebSocket: every line once and in order both ways, across dropped
 * connections.
 */
export class HTTPSocket extends EventTarget {
  /**
   * Connects at once. `url`: ws://, wss://, http:// or https:// (mapped to
   * ws/wss), or relative to the page.
   */
  constructor(url: string | URL, options?: HTTPSocketOptions);

  /**
   * The page's own session (SPEC 12): the page was opened as a session by
   * the gateway (`page_sessions = true`), which put `<meta
   * name="tether-session" content="<SessionID>">` into it. Attaches to it
   * over WebSocket at the page's URL (a resume with count 0; the first
   * attach emits `open`). One object per page: later calls return it (with
   * the same options or none), and it is also `document.defaultHTMLSocket`.
   * Throws an Error on a page without the tag.
   */
  static page(options?: HTTPSocketOptions): HTTPSocket;

  /** The WebSocket URL in use. */
  readonly url: string;
  /** The options in force (defaults filled in). */
  readonly options: Required<HTTPSocketOptions>;
  /** The gateway's SessionID; null until the first open record. */
  readonly sessionId: string | null;
  /** Status of the worker's answer that opened the session. */
  readonly status: number | null;
  /** The opening answer's body; never a line. */
  readonly initialBody: string | null;
  /** Lines received so far. */
  readonly received: number;
  readonly readyState: HTTPSocketState;
  /** The close code that ended the socket; null until closed. */
  readonly closeCode: number | null;
  /** Its reason, e.g. 'worker status 410'; null until closed. */
  readonly closeReason: string | null;

  /**
   * Sends one line: a string (no LF), or a plain object, URLSearchParams or
   * file-less FormData, form-encoded as one line. Queued while
   * (re)connecting; throws once closed.
   */
  send(message: HTTPSocketMessage): void;
  /**
   * The next line, in order; null once the session ended normally and
   * every line was read; rejects with an HTTPSocketError once it failed.
   */
  read(): Promise<string | null>;
  /** Ends the session (WebSocket close 1000); unsent lines are discarded. */
  close(): void;

  onopen: ((this: HTTPSocket, event: HTTPSocketEventMap['open']) => void) | null;
  online: ((this: HTTPSocket, event: HTTPSocketEventMap['line']) => void) | null;
  onreconnecting: ((this: HTTPSocket, event: HTTPSocketEventMap['reconnecting']) => void) | null;
  onresumed: ((this: HTTPSocket, event: HTTPSocketEventMap['resumed']) => void) | null;
  onclose: ((this: HTTPSocket, event: HTTPSocketEventMap['close']) => void) | null;
  onsessionlost: ((this: HTTPSocket, event: HTTPSocketEventMap['sessionlost']) => void) | null;

  addEventListener<K extends keyof HTTPSocketEventMap>(
    type: K,
    listener: (this: HTTPSocket, event: HTTPSocketEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof HTTPSocketEventMap>(
    type: K,
    listener: (this: HTTPSocket, event: HTTPSocketEventMap[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

declare global {
  interface Document {
    /** The page's own session, set by HTTPSocket.page() (undefined until then). */
    readonly defaultHTMLSocket?: HTTPSocket;
  }
}
