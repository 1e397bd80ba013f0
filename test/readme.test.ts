import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describePrivileged } from './helpers/netns.js';

const root = new URL('../', import.meta.url);

it('README starts with the demo command and the test command, and .ci/run runs that test command exactly', () => {
  const readme = readFileSync(new URL('README.md', root), 'utf8');
  const blocks = [...readme.matchAll(/```sh\n([^\n]+)\n```/g)].map((m) => m[1]!);
  expect(blocks[0]).toMatch(/npx ctmon demo$/);
  expect(blocks[1]).toMatch(/npm test$/);
  const ci = readFileSync(new URL('.ci/run', root), 'utf8').split('\n');
  expect(ci).toContain(blocks[1]);
  expect(blocks[1]).toContain('CONNTRACK_REQUIRE_PRIVILEGED=1');
});

/** The fenced ```js blocks of README.md that `pick` selects. */
function jsBlocks(pick: (block: string) => boolean): string[] {
  const readme = readFileSync(new URL('README.md', root), 'utf8');
  return [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!).filter(pick);
}

describePrivileged("README's Testing your code examples, run as written against this checkout", () => {
  let app: string;
  beforeAll(() => {
    // An app whose node_modules holds this checkout as `conntrack` and the repository's vitest, as an installed app would.
    app = mkdtempSync(join(tmpdir(), 'ctreadme-'));
    mkdirSync(join(app, 'node_modules'));
    symlinkSync(fileURLToPath(root), join(app, 'node_modules', 'conntrack'));
    symlinkSync(fileURLToPath(new URL('node_modules/vitest', root)), join(app, 'node_modules', 'vitest'));
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  });
  afterAll(() => rmSync(app, { recursive: true, force: true }));

  it('the node:test example passes under `node --test`', () => {
    const [block] = jsBlocks((b) => b.includes("from 'node:test'") && b.includes("from 'conntrack/testing'"));
    expect(block).toBeTruthy();
    writeFileSync(join(app, 'flows.test.mjs'), block!);
    const r = spawnSync(process.execPath, ['--test', 'flows.test.mjs'], { cwd: app, encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^# pass 2$/m);
    expect(r.stdout).toMatch(/^# skipped 0$/m);
  });

  it('the vitest example passes under `vitest run`', () => {
    const [block] = jsBlocks((b) => b.includes("from 'vitest'") && b.includes("from 'conntrack/testing'"));
    expect(block).toBeTruthy();
    writeFileSync(join(app, 'table.test.mjs'), block!);
    const r = spawnSync(process.execPath, [join(app, 'node_modules/vitest/vitest.mjs'), 'run', '--root', app, 'table.test.mjs'], { cwd: app, encoding: 'utf8', timeout: 120_000, env: { ...process.env, NO_COLOR: '1' } });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Tests\s+2 passed \(2\)/);
  });
});
