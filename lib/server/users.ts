/**
 * `koa-appr users`: manage the standalone server's user file (APPR_USERS).
 *
 *   koa-appr users [--file users.json] <command>
 *
 * (commands: USERS_HELP below)
 *
 * The file defaults to $APPR_USERS, else ./users.json; commands that change it create it (with a fresh token
 * secret) when missing. Passwords are read from the terminal without echo, or from the first line of stdin when it
 * is not a terminal (`echo "$PW" | ... add ci`), or from --password (visible in `ps`: avoid).
 */
import { existsSync } from 'node:fs';
import process from 'node:process';
import { hashPassword } from '../auth/password.js';
import { UserStore, newSecret, readUserFile, writeUserFile, type Role, type UserFile } from '../auth/user-store.js';

const ROLES = new Set(['read', 'write', 'admin']);

export const USERS_HELP = `Usage: koa-appr users [--file users.json] <command>

  add <user> [--role ns:read|write|admin]...   add a user (asks for the password; default role: <user>:admin)
  passwd <user>                                change a password (revokes the user's login tokens)
  role <user> ns:role... | --remove ns...      grant or take away namespace roles (\`*\` = every namespace)
  remove <user>                                delete a user (revokes their tokens)
  list                                         users and roles
  anonymous-read on|off                        may anonymous callers read public packages
  default-visibility public|private            visibility of new packages whose push does not say
  token <user> [--days N]                      print an Authorization value for a robot (CI)
  hash                                         print the hash of a password (to edit the file by hand)

The file defaults to $APPR_USERS, else ./users.json. Passwords are read from the terminal without echo, or from
the first line of stdin when it is not a terminal, or from --password (visible in \`ps\`: avoid).`;

/** Run one `koa-appr users` command; resolves with the exit code, throws with a message for the user. */
export async function main(argv: string[]): Promise<number> {
  const args = [...argv];
  const file = take(args, '--file') ?? process.env.APPR_USERS ?? 'users.json';
  const password = take(args, '--password');
  const [command, ...rest] = args;
  const load = async (): Promise<UserFile> =>
    existsSync(file) ? readUserFile(file) : { anonymousRead: true, secret: newSecret(), users: {} };
  const need = (data: UserFile, user: string | undefined): string => {
    if (!user) throw new Error('a user name is required');
    if (!Object.hasOwn(data.users, user)) throw new Error(`no user ${user} in ${file}`);
    return user;
  };

  switch (command) {
    case 'add': {
      const data = await load();
      const user = rest.find((a) => !a.startsWith('--'));
      if (!user) throw new Error('usage: add <user> [--role ns:role]...');
      if (Object.hasOwn(data.users, user)) throw new Error(`user ${user} exists (use passwd or role)`);
      const roles = parseRoles(takeAll(rest, '--role'));
      data.users[user] = {
        password: await hashPassword(await readPassword(password, `Password for ${user}: `)),
        roles: Object.keys(roles).length ? roles : { [user]: 'admin' },
      };
      await writeUserFile(file, data);
      console.log(`added ${user} to ${file}: ${describe(data.users[user].roles!)}`);
      return 0;
    }
    case 'passwd': {
      const data = await load();
      const user = need(data, rest[0]);
      data.users[user]!.password = await hashPassword(await readPassword(password, `New password for ${user}: `));
      await writeUserFile(file, data);
      console.log(`password of ${user} changed; their login tokens no longer work`);
      return 0;
    }
    case 'role': {
      const data = await load();
      const user = need(data, rest[0]);
      const record = data.users[user]!;
      const roles = { ...(record.roles ?? {}) };
      for (const namespace of takeAll(rest, '--remove')) delete roles[namespace];
      Object.assign(roles, parseRoles(rest.slice(1)));
      record.roles = roles;
      await writeUserFile(file, data);
      console.log(`${user}: ${describe(roles)}`);
      return 0;
    }
    case 'remove': {
      const data = await load();
      const user = need(data, rest[0]);
      delete data.users[user];
      await writeUserFile(file, data);
      console.log(`removed ${user}`);
      return 0;
    }
    case 'list': {
      // Only the commands that change the file create it: listing a mistyped path must not show an empty store.
      if (!existsSync(file)) throw new Error(`${file}: no such file (add creates it)`);
      const data = await load();
      console.log(
        `${file}: anonymous read ${data.anonymousRead ? 'on' : 'off'}, new packages ` +
          `${data.defaultVisibility ?? 'public'} by default`,
      );
      for (const [user, record] of Object.entries(data.users))
        console.log(`  ${user}: ${describe(record.roles ?? {})}`);
      return 0;
    }
    case 'anonymous-read': {
      const data = await load();
      if (rest[0] !== 'on' && rest[0] !== 'off') throw new Error('usage: anonymous-read on|off');
      data.anonymousRead = rest[0] === 'on';
      await writeUserFile(file, data);
      console.log(`anonymous read ${rest[0]}`);
      return 0;
    }
    case 'default-visibility': {
      const data = await load();
      if (rest[0] !== 'public' && rest[0] !== 'private') throw new Error('usage: default-visibility public|private');
      data.defaultVisibility = rest[0];
      await writeUserFile(file, data);
      console.log(`new packages are ${rest[0]} unless their push says otherwise`);
      return 0;
    }
    case 'token': {
      const data = await load();
      const user = need(data, rest[0]);
      const days = Number(take(rest, '--days') ?? data.tokenTtlDays ?? 30);
      if (!(days > 0)) throw new Error('--days must be a positive number');
      if (!data.secret && !process.env.APPR_SECRET) throw new Error(`${file} has no "secret": tokens need one`);
      const store = new UserStore(data, { ...(process.env.APPR_SECRET ? { secret: process.env.APPR_SECRET } : {}) });
      console.log(`Bearer ${store.issueToken(user, days * 86_400)}`);
      return 0;
    }
    case 'hash':
      console.log(await hashPassword(await readPassword(password, 'Password: ')));
      return 0;
    case '--help':
    case '-h':
      console.log(USERS_HELP);
      return 0;
    default:
      console.error(command === undefined ? USERS_HELP : `unknown command ${JSON.stringify(command)}\n\n${USERS_HELP}`);
      return 2;
  }
}

function parseRoles(specs: string[]): Record<string, Role> {
  const roles: Record<string, Role> = {};
  for (const spec of specs) {
    const colon = spec.lastIndexOf(':');
    const namespace = spec.slice(0, colon);
    const role = spec.slice(colon + 1);
    if (colon <= 0 || !ROLES.has(role)) throw new Error(`role must look like namespace:read|write|admin, got ${spec}`);
    roles[namespace] = role as Role;
  }
  return roles;
}

function describe(roles: Record<string, Role>): string {
  const entries = Object.entries(roles);
  return entries.length ? entries.map(([ns, role]) => `${ns}:${role}`).join(' ') : 'no roles (public packages only)';
}

/** Remove `--flag value` from args and return the value. */
function take(args: string[], flag: string): string | undefined {
  const index = args.indexOf(flag);
  if (index < 0) return undefined;
  const [, value] = args.splice(index, 2);
  if (value === undefined) throw new Error(`${flag} needs a value`);
  return value;
}

function takeAll(args: string[], flag: string): string[] {
  const values: string[] = [];
  for (let value = take(args, flag); value !== undefined; value = take(args, flag)) values.push(value);
  return values;
}

async function readPassword(given: string | undefined, prompt: string): Promise<string> {
  const password = given ?? (process.stdin.isTTY ? await promptHidden(prompt) : await firstLine());
  if (!password) throw new Error('empty password');
  return password;
}

async function firstLine(): Promise<string> {
  let text = '';
  for await (const chunk of process.stdin) {
    text += String(chunk);
    if (text.includes('\n')) break;
  }
  return text.split(/\r?\n/)[0] ?? '';
}

function promptHidden(prompt: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const input = process.stdin;
    process.stderr.write(prompt);
    input.setRawMode(true);
    input.resume();
    let value = '';
    const onData = (chunk: Buffer): void => {
      for (const char of chunk.toString('utf8')) {
        if (char === '\r' || char === '\n') return done(null);
        if (char === '\u0003') return done(new Error('cancelled'));
        if (char === '\u007f' || char === '\b') value = value.slice(0, -1);
        else value += char;
      }
    };
    const done = (err: Error | null): void => {
      input.off('data', onData);
      input.setRawMode(false);
      input.pause();
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    input.on('data', onData);
  });
}
