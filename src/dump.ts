/** Streaming dumps: a native cursor's record batches, and the entries decoded from them one batch at a time. */
import type { Entry } from './entry.js';
import { wrapNative } from './errors.js';
import type { NativeDumpCursor } from './native.js';
import { dataViewOf, decodeEntry, RECORD_SIZE, recordEnd } from './record.js';

/** Records per native batch: ~400 KiB, small enough to keep a dump's memory flat. */
const DUMP_BATCH = 2048;

/**
 * The next batch, requested ahead. Marked handled at once: a consumer that
 * abandons the iterator without return() leaves it pending, and when the
 * cursor is collected it ends with ECANCELED; that must not surface as an
 * unhandled rejection. Awaiting it still throws as usual.
 */
function prefetch(cursor: NativeDumpCursor, records: number): Promise<Buffer | null> {
  const p = cursor.next(records);
  p.catch(() => undefined);
  return p;
}

/**
 * The record batches of a native dump cursor (`records` at most each), the
 * next one already requested while the caller works on the current one.
 * Closes the cursor however the caller stops.
 */
export async function* dumpBatches(cursor: NativeDumpCursor, op: string, records = DUMP_BATCH): AsyncGenerator<Buffer, void, undefined> {
  let pending: Promise<Buffer | null> | undefined = prefetch(cursor, records);
  try {
    for (;;) {
      let buf: Buffer | null;
      try {
        buf = await pending!;
      } catch (e) {
        pending = undefined;
        throw wrapNative(e, op);
      }
      if (buf === null) {
        pending = undefined;
        return;
      }
      pending = prefetch(cursor, records);
      yield buf;
    }
  } finally {
    // A consumer that stops early leaves one batch in flight: it ends with ECANCELED, ignore it.
    pending?.catch(() => undefined);
    cursor.close();
  }
}

/** Async iteration over a dump, one batch decoded at a time. */
export async function* iterateDump(cursor: NativeDumpCursor): AsyncGenerator<Entry, void, undefined> {
  for await (const buf of dumpBatches(cursor, 'dump')) {
    const dv = dataViewOf(buf);
    for (let off = 0; off + RECORD_SIZE <= buf.length; off = recordEnd(dv, off)) yield decodeEntry(buf, dv, off);
  }
}
