/**
 * The public types as users compile them: test/types/roundtrip.ts, importing
 * 'conntrack' through package.json's exports (the built dist/*.d.ts), with
 * tsc under plain `strict` and under `exactOptionalPropertyTypes`, library
 * checks on. Needs `npm run build` first (`npm test` builds).
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');

describe('the published types, compiled as users compile them', () => {
  let dir: string;

  beforeAll(() => {
    expect(existsSync(join(root, 'dist', 'index.d.ts')), 'dist/index.d.ts: run npm run build first').toBe(true);
    dir = mkdtempSync(join(tmpdir(), 'cttypes-'));
    mkdirSync(join(dir, 'node_modules', '@types'), { recursive: true });
    // The package as an installed dependency: resolved through its package.json exports.
    symlinkSync(root, join(dir, 'node_modules', 'conntrack'));
    symlinkSync(join(root, 'node_modules', '@types', 'node'), join(dir, 'node_modules', '@types', 'node'));
    cpSync(join(root, 'test', 'types', 'roundtrip.ts'), join(dir, 'roundtrip.ts'));
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  });

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const exact of [false, true]) {
    it(`tsc --noEmit under strict${exact ? ' with exactOptionalPropertyTypes' : ''}: no errors, no cast`, () => {
      const config = join(dir, `tsconfig.${exact ? 'exact' : 'strict'}.json`);
      writeFileSync(config, JSON.stringify({
        compilerOptions: {
          target: 'ES2022', lib: ['ES2022', 'ESNext.Disposable'], module: 'NodeNext', moduleResolution: 'NodeNext',
          strict: true, exactOptionalPropertyTypes: exact, noUncheckedIndexedAccess: true, skipLibCheck: false, noEmit: true, types: ['node'],
        },
        files: ['roundtrip.ts'],
      }));
      const r = spawnSync(process.execPath, [tsc, '-p', config], { cwd: dir, encoding: 'utf8' });
      expect(r.stdout + r.stderr).toBe('');
      expect(r.status).toBe(0);
    }, 120_000);
  }
});
