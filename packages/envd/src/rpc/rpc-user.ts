import type { HandlerContext } from '@connectrpc/connect';
import { userFromAuthorization } from '../auth/request-user.js';
import type { EnvdState } from '../state.js';
import type { SandboxUser, UserDb } from '../users/user-db.js';

/** The user an RPC acts as: Basic-auth user name, else the /init default user. */
export async function rpcUser(ctx: HandlerContext, state: EnvdState, users: UserDb): Promise<SandboxUser> {
  const name = userFromAuthorization(ctx.requestHeader.get('authorization')) ?? state.defaultUser;
  return users.lookup(name);
}
