// A loopback port nothing listens on right now, for a process a test starts that must be told its port up front.
// Racy by nature (another process may take it before the child binds): prefer port 0 where the child reports it.

import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';

export async function freePort(host = '127.0.0.1'): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, host, resolve);
  });
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}
