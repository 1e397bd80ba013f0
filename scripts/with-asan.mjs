// Runs a command with the sanitizer build of the addon loaded into an
// uninstrumented node: preloads the ASan/UBSan runtimes and points the loader
// (src/native.ts) at build-asan/. Usage: node scripts/with-asan.mjs CMD ARGS...
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const addon = fileURLToPath(new URL('../build-asan/Release/conntrack.node', import.meta.url));
if (!existsSync(addon)) {
  console.error(`with-asan: ${addon} is missing: run npm run build:asan first`);
  process.exit(1);
}
const runtime = (name) => execFileSync('gcc', [`-print-file-name=${name}`], { encoding: 'utf8' }).trim();
const env = {
  ...process.env,
  CONNTRACK_ADDON: addon,
  LD_PRELOAD: [runtime('libasan.so'), runtime('libubsan.so')].join(':'),
  // Node and V8 keep allocations until exit by design: leaks are the soak's and the fuzzer's job.
  ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=1:halt_on_error=1:symbolize=1:allow_user_segv_handler=0',
  UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
};
const [cmd, ...args] = process.argv.slice(2);
const r = spawnSync(cmd, args, { stdio: 'inherit', env });
process.exit(r.status ?? 1);
