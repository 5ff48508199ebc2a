import { readFile, stat } from 'node:fs/promises';
import { EnvdError } from '../errors.js';

/** A sandbox user as described by the sandbox's own /etc/passwd and /etc/group. */
export interface SandboxUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly home: string;
  readonly shell: string;
  /** Supplementary group ids (from /etc/group member lists), primary gid included. */
  readonly groups: readonly number[];
}

interface Snapshot {
  key: string;
  users: Map<string, SandboxUser>;
  userNames: Map<number, string>;
  groupNames: Map<number, string>;
}

/**
 * Reads users from the sandbox's account files at request time (never from the host's
 * account database, which is not the sandbox's), re-parsing only when the files change.
 */
export class UserDb {
  private snapshot: Snapshot | undefined;

  constructor(
    private readonly passwdPath: string,
    private readonly groupPath: string,
  ) {}

  /** Resolves a user by name; unknown names throw `unknown_user`. */
  async lookup(name: string): Promise<SandboxUser> {
    const snap = await this.load();
    const user = snap.users.get(name);
    if (!user) throw new EnvdError('unknown_user', `user "${name}" does not exist in the sandbox`);
    return user;
  }

  /** Name for a uid, or the number as text when it has no entry. */
  async userName(uid: number): Promise<string> {
    return (await this.load()).userNames.get(uid) ?? String(uid);
  }

  /** Name for a gid, or the number as text when it has no entry. */
  async groupName(gid: number): Promise<string> {
    return (await this.load()).groupNames.get(gid) ?? String(gid);
  }

  private async load(): Promise<Snapshot> {
    const [p, g] = await Promise.all([stat(this.passwdPath).catch(() => undefined), stat(this.groupPath).catch(() => undefined)]);
    const key = `${p?.mtimeMs}:${p?.size}:${p?.ino}|${g?.mtimeMs}:${g?.size}:${g?.ino}`;
    if (this.snapshot?.key === key) return this.snapshot;
    const [passwd, group] = await Promise.all([
      readFile(this.passwdPath, 'utf8').catch(() => ''),
      readFile(this.groupPath, 'utf8').catch(() => ''),
    ]);
    const groupNames = new Map<number, string>();
    const memberOf = new Map<string, number[]>();
    for (const line of group.split('\n')) {
      const f = line.split(':');
      if (f.length < 4 || line.startsWith('#')) continue;
      const gid = Number(f[2]);
      if (!Number.isInteger(gid)) continue;
      if (!groupNames.has(gid)) groupNames.set(gid, f[0]);
      for (const member of f[3].split(',')) {
        const m = member.trim();
        if (m) memberOf.set(m, [...(memberOf.get(m) ?? []), gid]);
      }
    }
    const users = new Map<string, SandboxUser>();
    const userNames = new Map<number, string>();
    for (const line of passwd.split('\n')) {
      const f = line.split(':');
      if (f.length < 7 || line.startsWith('#')) continue;
      const uid = Number(f[2]);
      const gid = Number(f[3]);
      if (!Number.isInteger(uid) || !Number.isInteger(gid)) continue;
      const groups = [...new Set([gid, ...(memberOf.get(f[0]) ?? [])])];
      users.set(f[0], { name: f[0], uid, gid, home: f[5] || '/', shell: f[6] || '/bin/sh', groups });
      if (!userNames.has(uid)) userNames.set(uid, f[0]);
    }
    this.snapshot = { key, users, userNames, groupNames };
    return this.snapshot;
  }
}
