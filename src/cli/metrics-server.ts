/**
 * The HTTP side of ctmon exporter: /metrics for a prom-client registry, held
 * to a bounded cost whatever the clients do.
 *
 * - One rendering at a time, shared: every scrape that arrives while one is
 *   being rendered gets that body (one reading for all of them).
 * - One request at a time per connection. Node's parser hands over every
 *   pipelined request of a chunk at once, and pauses the socket only once
 *   responses are written; a response rendered asynchronously is written too
 *   late for that, so each request used to render and buffer its own body (a
 *   few KB of pipelined requests held hundreds of MB). Here the socket stops
 *   reading while any of its requests is unanswered, and the next request is
 *   served only once the previous response has gone to the kernel: a client
 *   that does not read holds one body, not one per request.
 * - Limits (HTTP_LIMITS) cut off clients that are slow to send, never read,
 *   or send oversized headers; a malformed request gets Node's 400 and the
 *   connection is closed.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { Counter, Gauge, type Registry } from 'prom-client';

/** The server's limits; README "Monitoring" documents them. */
export const HTTP_LIMITS = {
  /** A scraper sends its headers at once: a client still sending them after 10 s is cut off (408). */
  headersTimeoutMs: 10_000,
  /** The whole request (a GET has no body). */
  requestTimeoutMs: 15_000,
  /** How often those two are checked (Node's default, 30 s, would let a slow client stay 40 s). */
  checkIntervalMs: 1_000,
  /** Longer than a 1-minute scrape interval, so Prometheus keeps its connection between scrapes. */
  keepAliveTimeoutMs: 65_000,
  /** A connection with no progress either way for this long (a client that does not read its response) is closed. */
  idleTimeoutMs: 30_000,
  /** A scrape's headers are well under 1 KiB; a bearer token fits (431 beyond). */
  maxHeaderBytes: 8192,
  /** Bytes a connection may have sent beyond the request being answered before its socket stops reading; see GatedConnection. */
  heldBytes: 65_536,
  /** Pipelined requests answered in a row before the connection is closed; see GatedConnection. */
  pipelineDepth: 8,
} as const;

const INDEX = '<html><head><title>ctmon exporter</title></head><body><h1>ctmon exporter</h1><p><a href="/metrics">Metrics</a></p></body></html>\n';

/** One rendering of the registry at a time, shared by every scrape that asks meanwhile. */
function sharedRendering(registry: Registry): () => Promise<string> {
  let rendering: Promise<string> | undefined;
  return () => (rendering ??= registry.metrics().finally(() => (rendering = undefined)));
}

/**
 * One connection, between the TCP socket and Node's HTTP parser (which takes
 * any Duplex as a connection). Node parses every request in a chunk it reads
 * (up to 64 KB: some 1,600 pipelined requests) before anything can pause it,
 * and holds an IncomingMessage and a ServerResponse for each until the
 * connection closes. This hands the parser one request head at a time, and
 * the next only once the response to the one before has gone to the kernel:
 * at most one request of a connection is parsed and unanswered, however many
 * the client pipelines. What the client sent meanwhile waits here as bytes,
 * at most HTTP_LIMITS.heldBytes; beyond that the socket stops reading.
 *
 * A client that pipelines (its next request is here before the response to
 * the last one went out; Prometheus never does) gets HTTP_LIMITS.pipelineDepth
 * answers in a row, the last with `Connection: close`; what it pipelined
 * beyond is not answered (RFC 9112 9.3.2: it retries on a new connection).
 * Otherwise the kernel's socket buffers, megabytes on a fast path, would let
 * one client have thousands of scrapes rendered without reading one.
 */
class GatedConnection extends Duplex {
  readonly #raw: Socket;
  /** Bytes received and not yet given to the parser: held.subarray(offset). */
  #held: Buffer = Buffer.alloc(0);
  #offset = 0;
  #rawEnded = false;
  /** A request is being answered: nothing more goes to the parser. */
  #busy = false;
  /** Requests answered in a row with the next one already waiting (pipelined). */
  #pipelined = 0;
  /** The last answer said `Connection: close`: nothing more goes to the parser. */
  #closing = false;
  readonly #queue: [IncomingMessage, ServerResponse][] = [];
  readonly #serve: (req: IncomingMessage, res: ServerResponse) => Promise<void>;

  constructor(raw: Socket, serve: (req: IncomingMessage, res: ServerResponse) => Promise<void>) {
    super({ allowHalfOpen: true });
    this.#raw = raw;
    this.#serve = serve;
    raw.on('data', (d: Buffer) => {
      this.#held = this.#offset < this.#held.length ? Buffer.concat([this.#held.subarray(this.#offset), d]) : d;
      this.#offset = 0;
      if (this.#held.length > HTTP_LIMITS.heldBytes) raw.pause();
      this.#feed();
    });
    raw.on('end', () => {
      this.#rawEnded = true;
      this.#feed();
    });
    raw.on('timeout', () => this.emit('timeout'));
    raw.on('error', (e) => this.destroy(e));
    raw.on('close', () => this.destroy());
  }

  /** Hands the parser the next request head (or, without a complete one, all there is) while nothing is unanswered. */
  #feed(): void {
    while (!this.#busy && !this.#closing && !this.destroyed && this.readableLength === 0 && this.#offset < this.#held.length) {
      const end = this.#held.indexOf('\r\n\r\n', this.#offset);
      const upTo = end < 0 ? this.#held.length : end + 4;
      const slice = this.#held.subarray(this.#offset, upTo);
      this.#offset = upTo;
      // In flowing mode the parser runs inside push(): a complete head has made #busy true when it returns.
      this.push(slice);
    }
    if (this.#closing) {
      this.#held = Buffer.alloc(0);
      this.#offset = 0;
    } else if (this.#offset >= this.#held.length) {
      this.#held = Buffer.alloc(0);
      this.#offset = 0;
      if (this.#rawEnded) this.push(null);
      else if (this.#raw.isPaused()) this.#raw.resume();
    }
  }

  /** Node's parser wants more (after a pause of its own, or its first read). */
  override _read(): void {
    this.#feed();
  }

  /** Each write completes once the socket has handed it to the kernel: a response 'finish'es only then. */
  override _write(chunk: Buffer, encoding: BufferEncoding, done: (e?: Error | null) => void): void {
    this.#raw.write(chunk, encoding, done);
  }

  override _final(done: (e?: Error | null) => void): void {
    this.#raw.end(done);
  }

  override _destroy(e: Error | null, done: (e?: Error | null) => void): void {
    this.#raw.destroy();
    done(e);
  }

  setTimeout(ms: number): this {
    this.#raw.setTimeout(ms);
    return this;
  }

  /** A request Node parsed: answered in order, one at a time. */
  request(req: IncomingMessage, res: ServerResponse): void {
    this.#queue.push([req, res]);
    if (!this.#busy) void this.#drain();
  }

  async #drain(): Promise<void> {
    this.#busy = true;
    for (let next = this.#queue.shift(); next; next = this.#queue.shift()) {
      if (this.destroyed) continue;
      this.#pipelined = this.#offset < this.#held.length ? this.#pipelined + 1 : 0;
      if (this.#pipelined >= HTTP_LIMITS.pipelineDepth) {
        this.#closing = true;
        next[1].setHeader('connection', 'close');
      }
      await this.#serve(...next);
    }
    this.#busy = false;
    this.#feed();
  }
}

/** Resolves on the first of these events, removing its listeners. */
function firstOf(...events: [NodeJS.EventEmitter, string][]): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      for (const [emitter, name] of events) emitter.off(name, done);
      resolve();
    };
    for (const [emitter, name] of events) emitter.on(name, done);
  });
}

/**
 * Resolves once `res` has been handed to the kernel ('finish', after which
 * Node assigns the connection to the next response) or its connection is
 * gone. Called before anything is written. (`writableFinished` turns true
 * before 'finish' is emitted, while the next response has no socket yet.)
 */
function settled(res: ServerResponse, socket: Socket): Promise<void> {
  return firstOf([res, 'finish'], [socket, 'close']);
}

/** Waits while the socket's buffer is full (false: the connection is gone). */
async function writable(socket: Socket): Promise<boolean> {
  if (socket.destroyed) return false;
  if (socket.writableNeedDrain) await firstOf([socket, 'drain'], [socket, 'close']);
  return !socket.destroyed;
}

/**
 * An HTTP server for `registry` on /metrics (GET and HEAD), with an index
 * page on /. Adds promhttp's own two metrics to the registry, under the names
 * Go's client_golang gives them.
 */
export function createMetricsServer(registry: Registry): Server {
  const render = sharedRendering(registry);
  const inFlight = new Gauge({ name: 'promhttp_metric_handler_requests_in_flight', help: 'Scrapes being served (rendered or written) right now', registers: [registry] });
  const served = new Counter({ name: 'promhttp_metric_handler_requests_total', help: 'Scrapes answered, by HTTP status code', labelNames: ['code'], registers: [registry] });

  const serveMetrics = async (req: IncomingMessage, res: ServerResponse, socket: Socket): Promise<void> => {
    inFlight.inc();
    try {
      if (!(await writable(socket))) return;
      let status = 200;
      let body: string;
      try {
        body = await render();
      } catch (e) {
        status = 500;
        body = `${e instanceof Error ? e.message : String(e)}\n`;
      }
      if (socket.destroyed) return;
      const type = status === 200 ? registry.contentType : 'text/plain; charset=utf-8';
      const sent = settled(res, socket);
      res.writeHead(status, { 'content-type': type }).end(req.method === 'HEAD' ? undefined : body);
      served.inc({ code: String(status) });
      await sent;
    } finally {
      inFlight.dec();
    }
  };

  const serve = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    // The connection is this response's once the one before it has finished (Connection serves them in order).
    const socket = res.socket;
    if (!socket || socket.destroyed) return;
    const path = (req.url ?? '/').split('?')[0];
    const read = req.method === 'GET' || req.method === 'HEAD';
    if (read && path === '/metrics') return serveMetrics(req, res, socket);
    const sent = settled(res, socket);
    if (!read) res.writeHead(405, { allow: 'GET, HEAD' }).end();
    else if (path === '/') res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(INDEX);
    else res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found: try /metrics\n');
    await sent;
  };

  const server = createServer({
    headersTimeout: HTTP_LIMITS.headersTimeoutMs,
    requestTimeout: HTTP_LIMITS.requestTimeoutMs,
    connectionsCheckingInterval: HTTP_LIMITS.checkIntervalMs,
    keepAliveTimeout: HTTP_LIMITS.keepAliveTimeoutMs,
    maxHeaderSize: HTTP_LIMITS.maxHeaderBytes,
  }, (req, res) => (req.socket as unknown as GatedConnection).request(req, res));
  server.setTimeout(HTTP_LIMITS.idleTimeoutMs);
  // Node's own connection listener parses whatever Duplex it is given: give it the gated connection.
  const parse = server.listeners('connection') as ((socket: Duplex) => void)[];
  server.removeAllListeners('connection');
  server.on('connection', (raw: Socket) => {
    const gated = new GatedConnection(raw, serve);
    for (const listener of parse) listener.call(server, gated);
  });
  return server;
}
