import { openSync, readSync, closeSync, statSync, existsSync } from 'node:fs';

/**
 * Follows a component's pino log while `cove up` waits for it, so long steps (the first
 * base-template build takes about a minute) show progress instead of silence.
 */
export class LogTail {
  private offset: number;
  constructor(private readonly file: string) {
    this.offset = existsSync(file) ? statSync(file).size : 0;
  }

  /** New complete lines since the last call, rendered as `msg` (plus a few known fields). */
  read(): string[] {
    if (!existsSync(this.file)) return [];
    const size = statSync(this.file).size;
    if (size <= this.offset) return [];
    const fd = openSync(this.file, 'r');
    const buf = Buffer.alloc(size - this.offset);
    readSync(fd, buf, 0, buf.length, this.offset);
    closeSync(fd);
    const text = buf.toString('utf8');
    const end = text.lastIndexOf('\n');
    if (end < 0) return [];
    this.offset += Buffer.byteLength(text.slice(0, end + 1));
    return text
      .slice(0, end)
      .split('\n')
      .map(render)
      .filter((l): l is string => l !== undefined);
  }
}

function render(line: string): string | undefined {
  try {
    const rec = JSON.parse(line) as { level?: number; msg?: string; line?: string; templateId?: string };
    if (!rec.msg || (rec.level ?? 30) < 30) return undefined;
    // Template builds log each line of the builder's output in `line`.
    return rec.line ? `${rec.msg}${rec.templateId ? ` ${rec.templateId}` : ''}: ${rec.line}` : rec.msg;
  } catch {
    return line.trim() || undefined;
  }
}
