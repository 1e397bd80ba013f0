/**
 * ctmon exporter's HTTP server (src/cli/metrics-server.ts) on a plain
 * prom-client registry, driven by raw TCP clients: one rendering shared by
 * concurrent scrapes, pipelined requests parsed and answered one at a time
 * and at most HTTP_LIMITS.pipelineDepth in a row, malformed and oversized
 * requests refused, the limits README states. No root needed.
 */
import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { Gauge, Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { createMetricsServer, HTTP_LIMITS } from '../../src/cli/metrics-server.js';
import { waitFor } from '../helpers/netns.js';

/** A registry whose one metric counts its collections, each held until `release()`d (or at once with `hold` false). */
function countingRegistry(hold = false): { registry: Registry; collects: () => number; release: () => void } {
  const registry = new Registry();
  let collects = 0;
  const waiting: (() => void)[] = [];
  new Gauge({
    name: 'test_collects', help: 'collections so far', registers: [registry],
    async collect() {
      collects++;
      this.set(collects);
      if (hold) await new Promise<void>((resolve) => waiting.push(resolve));
    },
  });
  return { registry, collects: () => collects, release: () => waiting.splice(0).forEach((r) => r()) };
}

/** Sends `data` on one connection; resolves with all it got once the server closes it (or after `waitMs`). */
function exchange(port: number, data: string, waitMs = 3000): Promise<{ text: string; closedByServer: boolean }> {
  return new Promise((resolve) => {
    let text = '';
    const s = connect(port, '127.0.0.1', () => s.write(data));
    s.on('data', (d: Buffer) => (text += d.toString('latin1')));
    s.on('error', () => undefined);
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ text, closedByServer: false });
    }, waitMs);
    s.on('end', () => {
      clearTimeout(timer);
      s.destroy();
      resolve({ text, closedByServer: true });
    });
  });
}

const statuses = (text: string): string[] => [...text.matchAll(/^HTTP\/1\.1 (\d+)/gm)].map((m) => m[1]!);
const GET = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: t\r\n${extra}\r\n`;

describe('ctmon exporter HTTP server (pure)', () => {
  let server: Server | undefined;
  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise((r) => server?.close(r) ?? r(undefined));
    server = undefined;
  });
  const listen = async (registry: Registry): Promise<number> => {
    server = createMetricsServer(registry);
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    return (server.address() as AddressInfo).port;
  };

  it('scrapes that arrive while one rendering is under way share it: one collection, one body for all', async () => {
    const c = countingRegistry(true);
    const port = await listen(c.registry);
    const scrapes = Array.from({ length: 20 }, () => fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()));
    await waitFor(() => (c.collects() === 1 ? true : undefined), 5000, 'the first collection');
    // Every request reaches the server before the rendering ends: the in-flight gauge counts them.
    await waitFor(async () => {
      const g = await c.registry.getSingleMetric('promhttp_metric_handler_requests_in_flight')!.get();
      return g.values[0]!.value === 20 ? true : undefined;
    }, 5000, 'all 20 scrapes in flight');
    c.release();
    const bodies = await Promise.all(scrapes);
    expect(c.collects()).toBe(1);
    expect(new Set(bodies).size).toBe(1);
    expect(bodies[0]).toContain('test_collects 1');
  });

  it('pipelined requests are answered in order, one at a time; the 8th in a row says Connection: close and the rest are not answered', async () => {
    const c = countingRegistry();
    const port = await listen(c.registry);
    const mixed = await exchange(port, GET('/metrics') + GET('/nope') + 'POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n\r\n\r\n' + GET('/', 'Connection: close\r\n'));
    expect(statuses(mixed.text)).toEqual(['200', '404', '405', '200']);
    expect(mixed.closedByServer).toBe(true);

    let parsed = 0;
    server!.on('request', () => parsed++);
    const before = c.collects();
    const deep = await exchange(port, GET('/metrics').repeat(500));
    expect(statuses(deep.text)).toEqual(Array(HTTP_LIMITS.pipelineDepth).fill('200'));
    expect([...deep.text.matchAll(/^connection: close\r$/gim)]).toHaveLength(1);
    expect(deep.closedByServer).toBe(true);
    // Node's parser saw only the requests answered, not the 500 sent.
    expect(parsed).toBe(HTTP_LIMITS.pipelineDepth);
    expect(c.collects() - before).toBe(HTTP_LIMITS.pipelineDepth);
  });

  it('a client that sends its next request after reading the last one keeps its connection: no pipelining, no limit', async () => {
    const port = await listen(countingRegistry().registry);
    const got = await new Promise<string[]>((resolve) => {
      const s = connect(port, '127.0.0.1', () => s.write(GET('/metrics')));
      const seen: string[] = [];
      s.on('data', (d: Buffer) => {
        seen.push(...statuses(d.toString('latin1')));
        if (seen.length < 12) s.write(GET('/metrics'));
        else {
          s.destroy();
          resolve(seen);
        }
      });
    });
    expect(got).toEqual(Array(12).fill('200'));
  });

  it('refuses what is not a scrape: malformed (400), headers over the limit (431, and not just under it), HEAD without a body', async () => {
    const port = await listen(countingRegistry().registry);
    const bad = await exchange(port, 'GARBAGE\r\n\r\n');
    expect(statuses(bad.text)).toEqual(['400']);
    expect(bad.closedByServer).toBe(true);
    const big = await exchange(port, `GET /metrics HTTP/1.1\r\nHost: t\r\nX: ${'a'.repeat(HTTP_LIMITS.maxHeaderBytes)}\r\n\r\n`);
    expect(statuses(big.text)).toEqual(['431']);
    const fits = await exchange(port, `GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX: ${'a'.repeat(HTTP_LIMITS.maxHeaderBytes - 200)}\r\n\r\n`);
    expect(statuses(fits.text)).toEqual(['200']);
    const head = await exchange(port, 'HEAD /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n');
    expect(statuses(head.text)).toEqual(['200']);
    expect(head.text.split('\r\n\r\n')[1]).toBe('');
  });

  it('applies the limits README states', async () => {
    await listen(countingRegistry().registry);
    expect(server!.headersTimeout).toBe(HTTP_LIMITS.headersTimeoutMs);
    expect(server!.requestTimeout).toBe(HTTP_LIMITS.requestTimeoutMs);
    expect(server!.keepAliveTimeout).toBe(HTTP_LIMITS.keepAliveTimeoutMs);
    expect(server!.timeout).toBe(HTTP_LIMITS.idleTimeoutMs);
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8').replace(/\s+/g, ' ');
    const s = (ms: number): string => `${ms / 1000} s`;
    for (const phrase of [
      `headers within ${s(HTTP_LIMITS.headersTimeoutMs)}`, `the whole request within ${s(HTTP_LIMITS.requestTimeoutMs)}`,
      `${HTTP_LIMITS.maxHeaderBytes / 1024} KiB of headers`, `idle for ${s(HTTP_LIMITS.keepAliveTimeoutMs)}`,
      `no progress for ${s(HTTP_LIMITS.idleTimeoutMs)}`, `${HTTP_LIMITS.pipelineDepth} pipelined requests`,
    ]) expect(readme).toContain(phrase);
  });
});
