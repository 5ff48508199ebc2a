// `node stand-in-socks-main.js <address> <port> <username> <password> [name=ip ...]`: serveStandInSocks as a
// process (e.g. inside a netns). Prints `ready`, then one JSON line per event.
import { serveStandInSocks } from './stand-in-socks.js';

const [address, port, username, password, ...pairs] = process.argv.slice(2);
const zone = Object.fromEntries(pairs.map((p) => p.split('=') as [string, string]));
await serveStandInSocks({ address: address!, port: Number(port), username: username!, password: password!, zone, onEvent: (e) => process.stdout.write(JSON.stringify(e) + '\n') });
process.stdout.write('ready\n');
