// scratch: idle envd memory with and without the code cache, alternated
import { readFileSync, cpSync, rmSync, existsSync } from 'node:fs';
import { startEnvd } from './dist/test/envd-process.js';
import { ENVD_NODE_FLAGS } from '@cove/contracts/sandbox';
const inst = process.argv[2];
const nocache = '/tmp/bg/envd-nocache';
rmSync(nocache, { recursive: true, force: true });
cpSync(inst, nocache, { recursive: true });
rmSync(`${nocache}/envd.cjs.cache`);
const N = 10, ROUNDS = Number(process.argv[3] ?? 3);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function mem(pid) {
  const t = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (k) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(t)[1]);
  return { anon: kb('Anonymous') / 1024, pss: kb('Pss') / 1024 };
}
async function arm(dir) {
  const es = [];
  for (let i = 0; i < N; i++) es.push(await startEnvd({}, { entry: `${dir}/envd-start.cjs`, nodeFlags: [...ENVD_NODE_FLAGS] }));
  for (const e of es) await e.init({});
  await sleep(8000);
  const m = es.map((e) => mem(e.proc.pid));
  await Promise.all(es.map((e) => e.stop()));
  const avg = (k) => m.reduce((a, x) => a + x[k], 0) / m.length;
  return `${avg('anon').toFixed(2)} / ${avg('pss').toFixed(2)}`;
}
for (let r = 0; r < ROUNDS; r++) {
  const a = await arm(nocache);
  const b = await arm(inst);
  console.log(`round ${r + 1}: no cache ${a}  cache ${b}  (MiB anon / pss)`);
}
