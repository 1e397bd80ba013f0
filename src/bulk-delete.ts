/**
 * Bulk deletes (deleteBySource, deleteWhere): their options and result, and
 * the one path both take. A dry run counts through the same cursor and
 * matcher a real delete streams through.
 */
import { checkBoolean, checkSignal, own } from './check.js';
import type { Entry, Family, ProtocolName } from './entry.js';
import { ConntrackError, wrapNative } from './errors.js';
import { compileFilter, type Direction, type Filter } from './filter.js';
import type { NativeHandle } from './native.js';
import { dataViewOf, decodeEntry } from './record.js';

export interface DeleteOptions {
  /** Which tuple's source to match (deleteBySource only); default 'original' like `conntrack -D -s`. */
  direction?: Direction;
  family?: Family;
  zone?: number;
  protocol?: ProtocolName | number;
  /** Count what would be deleted, delete nothing. */
  dryRun?: boolean;
  /**
   * Required when the filter selects every entry whatever its syntax
   * (0.0.0.0/0 and ::/0, a mark mask of 0...): a bulk delete that empties the
   * table must be meant. flush() is the direct way.
   */
  all?: boolean;
  signal?: AbortSignal;
}

export interface DeleteFailure {
  entry: Entry;
  error: ConntrackError;
}

export interface DeleteResult {
  /** Entries that matched when the table was read. */
  matched: number;
  /** Entries this call deleted. */
  deleted: number;
  /** Matched entries that were gone (expired or deleted elsewhere) by the time of their delete. */
  alreadyGone: number;
  /** Deletes the kernel refused for another reason than ENOENT. */
  failed: DeleteFailure[];
}

export const DELETE_OPTION_KEYS = new Set(['direction', 'family', 'zone', 'protocol', 'dryRun', 'all', 'signal']);
export const DELETE_WHERE_OPTION_KEYS = new Set(['family', 'zone', 'protocol', 'dryRun', 'all', 'signal']);

export async function deleteMatching(native: NativeHandle, base: Filter, o: object, op: string, direction: Direction): Promise<DeleteResult> {
  // Every option is read (getters run) before any work starts: what they throw is the caller's own error.
  const filter: Filter = {};
  for (const k of Reflect.ownKeys(base)) (filter as Record<PropertyKey, unknown>)[k] = (base as Record<PropertyKey, unknown>)[k];
  for (const k of ['family', 'zone', 'protocol'] as const) {
    const v = own(o, k);
    if (v !== undefined) (filter as Record<string, unknown>)[k] = v;
  }
  const dryRun = checkBoolean(own(o, 'dryRun'), op, 'dryRun') === true;
  const all = checkBoolean(own(o, 'all'), op, 'all') === true;
  const signal = checkSignal(own(o, 'signal'), op);
  const compiled = compileFilter(filter, op, direction);
  // A filter that selects everything is a flush: make the caller say so.
  if (compiled.matchesAll && !all) {
    throw ConntrackError.invalid(op, 'the filter matches every entry: pass { all: true } to delete them all, or use flush()');
  }
  if (signal?.aborted) throw new ConntrackError('ECANCELED', op, `${op}: aborted before it started`, { cause: signal.reason });
  const cursor = native.dump(compiled.kernel, compiled.match);
  const onAbort = (): void => cursor.cancel();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const r = await cursor.deleteStreaming(dryRun);
    return {
      matched: r.matched,
      deleted: r.deleted,
      alreadyGone: r.alreadyGone,
      failed: r.failed.map((f) => ({
        entry: decodeEntry(f.record, dataViewOf(f.record), 0),
        error: ConntrackError.fromErrno(f.errno, op),
      })),
    };
  } catch (e) {
    if (signal?.aborted) throw new ConntrackError('ECANCELED', op, `${op}: aborted`, { cause: signal.reason });
    throw wrapNative(e, op);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    cursor.close();
  }
}
