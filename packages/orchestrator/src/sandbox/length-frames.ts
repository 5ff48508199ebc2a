// The native helpers' replies (tenant-fs, spawn-broker): frames of a u32 LE body length, then the body, on a pipe.

export class FrameReader {
  private chunks: Buffer[] = [];
  private bytes = 0;

  /**
   * Takes what the pipe gave and hands on each whole frame's body. `accept(len)` sees a frame's length before any of
   * its body is kept, and `onFrame` its body; either returning false stops the reading (the caller has given up on
   * the helper). Chunks are joined once a whole frame is here, not at every chunk of a large read.
   */
  push(chunk: Buffer, accept: (len: number) => boolean, onFrame: (body: Buffer) => boolean): void {
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    for (;;) {
      if (this.bytes < 4) return;
      if (this.chunks[0]!.length < 4) this.chunks = [Buffer.concat(this.chunks)];
      const len = this.chunks[0]!.readUInt32LE(0);
      if (!accept(len)) return;
      if (this.bytes < 4 + len) return;
      let buf = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
      const body = buf.subarray(4, 4 + len);
      buf = buf.subarray(4 + len);
      this.chunks = buf.length ? [buf] : [];
      this.bytes = buf.length;
      if (!onFrame(body)) return;
    }
  }

  /** Forgets a partial frame (a new helper process starts a new stream). */
  reset(): void {
    this.chunks = [];
    this.bytes = 0;
  }
}
