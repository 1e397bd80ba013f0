#!/usr/bin/env node
/** Writes man/ctmon.1 from the built command table (run by `npm run build:ts`). */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { manPage } from '../dist/cli/man.js';

const root = new URL('../', import.meta.url);
const { version } = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'));
// Reproducible: a date only when the build is given one (SOURCE_DATE_EPOCH), never the clock's.
const epoch = process.env.SOURCE_DATE_EPOCH;
const date = epoch ? new Date(Number(epoch) * 1000).toISOString().slice(0, 10) : '';
mkdirSync(new URL('man/', root), { recursive: true });
writeFileSync(new URL('man/ctmon.1', root), manPage(version, date));
