/**
 * ctmon's command table (pure, no root): argv parsing as operators type it,
 * and --help, the man page and the bash/zsh/fish completions generated from
 * the one table, checked to name every command and option, and run in the
 * real shells.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fc, test as property } from '@fast-check/vitest';
import { afterAll, describe, expect, it } from 'vitest';
import { FILTER_OPTIONS, filterFromArgs, optionLabel, parseArgs, UsageError } from '../../src/cli/args.js';
import { COMMANDS, commandHelp, findCommand, GLOBAL_OPTIONS } from '../../src/cli/commands.js';
import { completionScript, SHELLS } from '../../src/cli/completion.js';
import { manPage } from '../../src/cli/man.js';

const list = findCommand('list')!;
/** The environment for the real shells and man: never the sanitizer runtime the ASan run preloads into us. */
const toolEnv: NodeJS.ProcessEnv = { ...process.env };
delete toolEnv.LD_PRELOAD;
delete toolEnv.ASAN_OPTIONS;
delete toolEnv.UBSAN_OPTIONS;
delete toolEnv.LSAN_OPTIONS;
const del = findCommand('delete')!;

describe('parseArgs on node:util', () => {
  it('takes values attached, after =, or as the next word, and conntrack\'s long spellings', () => {
    for (const argv of [['-s10.0.0.1'], ['-s', '10.0.0.1'], ['--src=10.0.0.1'], ['--src', '10.0.0.1'], ['--orig-src', '10.0.0.1'], ['--orig-src=10.0.0.1']]) {
      expect(parseArgs(argv, list.options).src, argv.join(' ')).toEqual(['10.0.0.1']);
    }
    const a = parseArgs(['-s', '10.0.0.1,10.0.0.2', '--orig-src', '2001:db8::/64', '--sport=80', '--orig-port-dst', '443', '-ptcp', '-w3', '-m0x10/0xff', '-u', 'ASSURED'], list.options);
    expect(filterFromArgs(a)).toEqual({
      src: ['10.0.0.1', '10.0.0.2', '2001:db8::/64'], sport: [80], dport: [443], protocol: 'tcp', zone: 3, mark: { value: 16, mask: 255 }, status: ['ASSURED'],
    });
  });

  it('bundles boolean short flags', () => {
    const a = parseArgs(['-ny', '-s', '10.0.0.1'], del.options);
    expect(a['dry-run']).toBe(true);
    expect(a.yes).toBe(true);
  });

  it('says what is wrong in the flag\'s own words', () => {
    const fails = (argv: string[], re: RegExp): void => {
      expect(() => parseArgs(argv, list.options), argv.join(' ')).toThrow(UsageError);
      expect(() => parseArgs(argv, list.options), argv.join(' ')).toThrow(re);
    };
    fails(['--bogus'], /^unknown option --bogus$/);
    fails(['-X'], /^unknown option -X$/);
    fails(['--src'], /--src needs a value \(ADDR\)/);
    fails(['--json=yes'], /--json takes no value/);
    fails(['-w', 'x'], /--zone needs a number, got 'x'/);
    fails(['--mark', '-1'], /--mark needs a value; for one that starts with '-', write --mark=VALUE/);
    expect(filterFromArgs(parseArgs(['--mark=-1'], list.options)).mark).toBe(-1);
  });

  property.prop([fc.array(fc.constantFrom(...FILTER_OPTIONS.filter((o) => o.type === 'list')), { minLength: 1, maxLength: 6 }), fc.array(fc.ipV4(), { minLength: 6, maxLength: 6 }), fc.array(fc.constantFrom('short', 'attached', 'equals', 'alias', 'long'), { minLength: 6, maxLength: 6 })])(
    'any spelling of a repeated list option collects every value in order (generated)',
    (opts, values, styles) => {
      const argv: string[] = [];
      const expected = new Map<string, string[]>();
      opts.forEach((o, i) => {
        const v = values[i]!;
        const style = styles[i]!;
        if (style === 'short' && o.short) argv.push(`-${o.short}`, v);
        else if (style === 'attached' && o.short) argv.push(`-${o.short}${v}`);
        else if (style === 'equals') argv.push(`--${o.name}=${v}`);
        else if (style === 'alias' && o.aliases?.[0]) argv.push(`--${o.aliases[0]}`, v);
        else argv.push(`--${o.name}`, v);
        expected.set(o.name, [...(expected.get(o.name) ?? []), v]);
      });
      const a = parseArgs(argv, list.options);
      // Aliases and names are gathered per spelling, so compare as multisets.
      for (const [name, vs] of expected) expect([...(a[name] as string[])].sort()).toEqual([...vs].sort());
    },
  );
});

/** Every spelling of every option of every command, and every command name. */
function everything(): { command: string; spellings: string[]; placeholder?: string }[] {
  return COMMANDS.flatMap((c) => [
    { command: c.name, spellings: [] },
    ...c.options.map((o) => ({
      command: c.name,
      spellings: [...(o.short ? [`-${o.short}`] : []), `--${o.name}`, ...(o.aliases ?? []).map((a) => `--${a}`)],
      ...(o.placeholder ? { placeholder: o.placeholder } : {}),
    })),
  ]);
}

describe('--help, the man page and the completions come from one table', () => {
  const man = manPage('9.9.9', '');
  const scripts = Object.fromEntries(SHELLS.map((s) => [s, completionScript(s, COMMANDS)]));

  it('every command and every option appears in --help, the man page and all three completions', () => {
    const manText = man.replace(/\\-/g, '-').replace(/\\e/g, '\\');
    for (const { command, spellings, placeholder } of everything()) {
      const help = commandHelp(findCommand(command)!);
      expect(manText, command).toContain(`ctmon ${command} [OPTIONS]`);
      for (const shell of SHELLS) expect(scripts[shell], `${shell}: ${command}`).toMatch(new RegExp(`\\b${command}\\b`));
      for (const s of spellings) {
        expect(help, `${command} --help: ${s}`).toContain(s);
        expect(manText, `man: ${command} ${s}`).toContain(s);
        expect(scripts.bash, `bash: ${command} ${s}`).toContain(s);
        expect(scripts.zsh, `zsh: ${command} ${s}`).toContain(s);
        // fish spells options as -s X / -l NAME.
        expect(scripts.fish, `fish: ${command} ${s}`).toContain(s.startsWith('--') ? `-l ${s.slice(2)}` : `-s ${s.slice(1)}`);
      }
      if (placeholder) expect(help).toContain(placeholder);
    }
    for (const o of GLOBAL_OPTIONS) expect(manText).toContain(optionLabel(o));
  });

  it('no option says VALUE: each names what it takes', () => {
    for (const c of COMMANDS) for (const o of c.options) if (o.type !== 'boolean') expect(o.placeholder, `${c.name} --${o.name}`).toBeTruthy();
  });

  it('the man page renders with man(1) without warnings', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ctman-'));
    try {
      writeFileSync(join(dir, 'ctmon.1'), man);
      const r = spawnSync('man', ['--warnings', '-l', join(dir, 'ctmon.1')], { encoding: 'utf8', env: { ...toolEnv, MANWIDTH: '100', MAN_KEEP_STDERR: '1' } });
      expect(r.stderr).toBe('');
      expect(r.stdout).toContain('ctmon delete [OPTIONS]');
      expect(r.stdout).toContain('--orig-port-dst PORT');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  describe('in the real shells', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ctcomp-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));
    for (const s of SHELLS) writeFileSync(join(dir, `ctmon.${s}`), scripts[s]!);

    /** What bash completes for the words typed so far (the last one being completed). */
    function bashComplete(...words: string[]): string[] {
      const script = [
        `source ${join(dir, 'ctmon.bash')}`,
        `COMP_WORDS=(ctmon ${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length}`,
        '_ctmon; printf "%s\\n" "${COMPREPLY[@]}"',
      ].join('\n');
      return execFileSync('bash', ['-c', script], { encoding: 'utf8', env: toolEnv }).split('\n').filter(Boolean);
    }

    /** What fish completes for a command line (fish's own `complete -C`). */
    function fishComplete(line: string): string[] {
      const out = execFileSync('fish', ['--no-config', '-c', `source ${join(dir, 'ctmon.fish')}; complete -C '${line}'`], { encoding: 'utf8', env: toolEnv });
      return out.split('\n').filter(Boolean).map((l) => l.split('\t')[0]!);
    }

    it('bash completes commands, options and option values', () => {
      expect(bashComplete('')).toEqual(expect.arrayContaining(COMMANDS.map((c) => c.name)));
      expect(bashComplete('de')).toEqual(['delete', 'demo']);
      expect(bashComplete('list', '--orig-')).toEqual(['--orig-src', '--orig-dst', '--orig-port-src', '--orig-port-dst', '--orig-zone']);
      expect(bashComplete('list', '-p', 'ud')).toEqual(['udp', 'udplite']);
      expect(bashComplete('delete', '--direction', '')).toEqual(['original', 'reply', 'either']);
      expect(bashComplete('completion', '')).toEqual(expect.arrayContaining(['bash', 'zsh', 'fish']));
    });

    it('fish completes commands, options and option values', () => {
      expect(fishComplete('ctmon ')).toEqual(expect.arrayContaining(COMMANDS.map((c) => c.name)));
      expect(fishComplete('ctmon list --orig-port-')).toEqual(['--orig-port-dst', '--orig-port-src']);
      expect(fishComplete('ctmon watch -o ')).toEqual(['conntrack', 'extended', 'id', 'json', 'labels', 'ndjson', 'table']);
      expect(fishComplete('ctmon flush --family ')).toEqual(['ipv4', 'ipv6']);
    });

    it('zsh parses and compiles the completion function', () => {
      execFileSync('zsh', ['-n', join(dir, 'ctmon.zsh')], { env: toolEnv });
      const r = spawnSync('zsh', ['-fc', `autoload -U compinit && compinit -u -D && source ${join(dir, 'ctmon.zsh')} && print -r -- \${_comps[ctmon]}`], { encoding: 'utf8', env: toolEnv });
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('_ctmon');
    });
  });
});
