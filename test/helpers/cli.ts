/** Runs ctmon (the built dist/cli/ctmon.js) as a user would, and under tmux for the interactive commands. */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CTMON = fileURLToPath(new URL('../../dist/cli/ctmon.js', import.meta.url));

export function ctmon(args: string[], options: { input?: string; uid?: number; env?: NodeJS.ProcessEnv } = {}): { status: number; stdout: string; stderr: string } {
  const cmd = options.uid === undefined ? process.execPath : 'setpriv';
  const argv = options.uid === undefined ? [CTMON, ...args] : [`--reuid=${options.uid}`, `--regid=${options.uid}`, '--clear-groups', process.execPath, CTMON, ...args];
  const r = spawnSync(cmd, argv, { encoding: 'utf8', input: options.input ?? '', maxBuffer: 1 << 28, timeout: 120_000, env: { ...process.env, ...options.env } });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A tmux session running one command in a pseudo-terminal. */
export class Tmux {
  readonly session: string;

  constructor(command: string, width = 160, height = 50) {
    this.session = `ctmon-test-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    // The shell prints the exit code and keeps the pane open so the test can read it.
    execFileSync('tmux', ['new-session', '-d', '-s', this.session, '-x', String(width), '-y', String(height), `${command}; echo "EXIT:$?"; sleep 60`]);
  }

  capture(): string {
    return execFileSync('tmux', ['capture-pane', '-p', '-t', this.session], { encoding: 'utf8' });
  }

  keys(...keys: string[]): void {
    execFileSync('tmux', ['send-keys', '-t', this.session, ...keys]);
  }

  /** 1 while the program shows its alternate screen. */
  alternateOn(): boolean {
    return execFileSync('tmux', ['display-message', '-p', '-t', this.session, '#{alternate_on}'], { encoding: 'utf8' }).trim() === '1';
  }

  kill(): void {
    spawnSync('tmux', ['kill-session', '-t', this.session]);
  }
}

/** Starts a command and gathers its stdout lines as they come; kill() sends SIGINT (as Ctrl-C). */
export function collectLines(cmd: string, args: string[]): { lines: string[]; kill: () => void } {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] });
  const out = { lines: [] as string[], kill: () => p.kill('SIGINT') };
  let buf = '';
  p.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    const parts = buf.split('\n');
    buf = parts.pop()!;
    out.lines.push(...parts.filter(Boolean));
  });
  return out;
}
