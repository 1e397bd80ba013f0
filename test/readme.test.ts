import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';

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
