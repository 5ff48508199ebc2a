// protoc-gen-es already writes a "@generated ... do not edit" header; this only
// checks that every generated file carries one so hand edits stand out in review.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
const walk = (d) => readdirSync(d).flatMap((f) => (statSync(join(d, f)).isDirectory() ? walk(join(d, f)) : [join(d, f)]));
for (const f of walk(new URL('../src/gen', import.meta.url).pathname)) {
  if (!readFileSync(f, 'utf8').includes('@generated')) throw new Error(`${f} lacks the generated header`);
}
