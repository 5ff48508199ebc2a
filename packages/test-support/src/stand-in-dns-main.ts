// `node stand-in-dns-main.js <address> name=ip ...`: serveStandInDns as a process (e.g. inside a netns). Prints
// `ready`, then one JSON line per query received.
import { serveStandInDns } from './stand-in-dns.js';

const [address, ...pairs] = process.argv.slice(2);
const zone = Object.fromEntries(pairs.map((p) => p.split('=') as [string, string]));
await serveStandInDns({ address: address!, zone, onQuery: (q) => process.stdout.write(JSON.stringify(q) + '\n') });
process.stdout.write('ready\n');
