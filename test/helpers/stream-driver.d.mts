import type { Conntrack, ConntrackEventStream, EventStats } from '../../src/index.js';

/** A next() result as the model compares it: an event by key ('new:1234'), an overrun, done, a rejection, or still pending at the deadline. */
export type Outcome =
  | { kind: 'event'; key: string }
  | { kind: 'overrun'; lost: number }
  | { kind: 'done' }
  | { kind: 'error'; code: string; lost?: number }
  | { kind: 'pending' };

export type EndHow = 'close' | 'return' | 'throw' | 'abort' | 'handle';

export interface StreamDriver {
  next(): Promise<number>;
  outcome(id: number, ms: number): Promise<Outcome>;
  end(how: EndHow): Promise<{ returned?: unknown; rejectedWithIt?: boolean }>;
  stats(): Promise<EventStats & { closed: boolean }>;
}

export function streamDriver(ct: Conntrack, stream: ConntrackEventStream<never>, ac: AbortController): StreamDriver;

export function workerDriver(
  entry: string,
  netns: string,
  table: 'entries' | 'expectations',
  options: Record<string, unknown>,
): Promise<{ driver: StreamDriver; errors: unknown[]; terminate(): Promise<number> }>;
