import { hashPassword, type Role, type UserFile } from '../../lib/index.js';

/** scrypt cost for test users: ln=10 hashes in milliseconds where the default (ln=15) takes about 100 ms. */
export const FAST_HASH = { ln: 10 };

/** The signing secret of the user files `userFile` builds. */
export const TEST_SECRET = 'test-secret-0123456789abcdef';

/**
 * A user store's file: anonymous reads on and TEST_SECRET (`extra` overrides or adds fields), with each user given
 * as `name: [password, roles]`, the password hashed at FAST_HASH.
 */
export async function userFile(
  users: Record<string, [password: string, roles?: Record<string, Role>]>,
  extra: Partial<UserFile> = {},
): Promise<UserFile> {
  const records: UserFile['users'] = {};
  for (const [name, [password, roles]] of Object.entries(users)) {
    records[name] = { password: await hashPassword(password, FAST_HASH), ...(roles === undefined ? {} : { roles }) };
  }
  return { anonymousRead: true, secret: TEST_SECRET, users: records, ...extra };
}
