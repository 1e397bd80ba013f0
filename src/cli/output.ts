/**
 * Writing to stdout with backpressure, and quiet exit on a closed pipe
 * (`ctmon list | head`).
 */
let closed = false;

process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') {
    closed = true;
    process.exit(0);
  }
  throw e;
});

export function stdoutClosed(): boolean {
  return closed;
}

/** Writes a chunk; waits for 'drain' when the pipe is full so a 250k-line listing stays in bounded memory. */
export async function write(chunk: string): Promise<void> {
  if (closed) return;
  if (!process.stdout.write(chunk)) {
    await new Promise<void>((resolve) => process.stdout.once('drain', resolve));
  }
}

/** Collects lines and writes them in blocks (one write per ~64 KiB). */
export class LineWriter {
  #buf: string[] = [];
  #size = 0;

  async line(s: string): Promise<void> {
    this.#buf.push(s);
    this.#size += s.length + 1;
    if (this.#size >= 65536) await this.flush();
  }

  async flush(): Promise<void> {
    if (!this.#buf.length) return;
    const chunk = this.#buf.join('\n') + '\n';
    this.#buf = [];
    this.#size = 0;
    await write(chunk);
  }
}
