import { gzipSync } from 'node:zlib';
import { pack, type Header } from 'tar-stream';

export type FixtureEntry = Partial<Header> & { name: string; content?: string };

/** A tar (gzipped when asked) with exactly these entries, in order: how tests write hostile layers. */
export async function makeTar(entries: FixtureEntry[], gzip = false): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p) chunks.push(c as Buffer);
  })();
  for (const { content, ...h } of entries) {
    const header = { uid: 0, gid: 0, mode: h.type === 'directory' ? 0o755 : 0o644, mtime: new Date(1_700_000_000_000), ...h };
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (content !== undefined) p.entry(header, content, cb);
      else p.entry(header, cb);
    });
  }
  p.finalize();
  await done;
  const tar = Buffer.concat(chunks);
  return gzip ? gzipSync(tar) : tar;
}
