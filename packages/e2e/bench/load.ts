// A bounded HTTP load generator run as its own process: `load.js <url> <headers-json> <ms> <connections>`.
// Prints {"rps": n} on stdout.
import { Pool } from 'undici';

const [url, headersJson, msArg, connArg] = process.argv.slice(2);
const headers = JSON.parse(headersJson) as Record<string, string>;
const ms = Number(msArg);
const connections = Number(connArg);
const u = new URL(url);
const pool = new Pool(u.origin, { connections, pipelining: 1 });
let done = 0;
const deadline = Date.now() + ms;
await Promise.all(
  Array.from({ length: connections }, async () => {
    while (Date.now() < deadline) {
      const r = await pool.request({ path: u.pathname, method: 'GET', headers });
      await r.body.dump();
      if (r.statusCode === 200) done++;
    }
  }),
);
await pool.close();
process.stdout.write(JSON.stringify({ rps: done / (ms / 1000) }) + '\n');
