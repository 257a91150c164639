import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/**
 * Salted password hashes with scrypt (node:crypto, no native add-on), in the PHC-style string passlib and others
 * use: `$scrypt$ln=15,r=8,p=1$<salt>$<hash>` (unpadded base64). `ln` is log2 of scrypt's N; the parameters travel
 * with the hash, so raising the cost later keeps old hashes verifiable.
 */
export interface HashOptions {
  /** log2(N), the CPU/memory cost (default 15: 32 MiB and about 50-100 ms per hash on a server core). */
  ln?: number;
  /** Block size (default 8). */
  r?: number;
  /** Parallelism (default 1). */
  p?: number;
}

const KEY_LENGTH = 32;
const SALT_LENGTH = 16;
const FORMAT = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/;

function derive(password: string, salt: Buffer, ln: number, r: number, p: number, length: number): Promise<Buffer> {
  const N = 2 ** ln;
  const options: ScryptOptions = { N, r, p, maxmem: 256 * N * r * p };
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, length, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

function checkParams(ln: number, r: number, p: number): void {
  // Bounds keep a hostile or mistyped user file from asking for gigabytes per login.
  if (!(ln >= 10 && ln <= 20 && r >= 1 && r <= 16 && p >= 1 && p <= 4)) {
    throw new TypeError(`koa-appr: scrypt parameters out of range (ln=${ln}, r=${r}, p=${p})`);
  }
}

export async function hashPassword(password: string, options: HashOptions = {}): Promise<string> {
  const { ln = 15, r = 8, p = 1 } = options;
  checkParams(ln, r, p);
  const salt = randomBytes(SALT_LENGTH);
  const key = await derive(password, salt, ln, r, p, KEY_LENGTH);
  return `$scrypt$ln=${ln},r=${r},p=${p}$${b64(salt)}$${b64(key)}`;
}

/** Whether `encoded` is a hash string this module can verify (checked when a user file is loaded). */
export function isPasswordHash(encoded: string): boolean {
  const match = FORMAT.exec(encoded);
  if (!match) return false;
  try {
    checkParams(Number(match[1]), Number(match[2]), Number(match[3]));
    return true;
  } catch {
    return false;
  }
}

/** Constant-time comparison of `password` against a hash from `hashPassword`. False for a malformed hash. */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  const match = FORMAT.exec(encoded);
  if (!match || !isPasswordHash(encoded)) return false;
  const [, ln, r, p, salt, hash] = match as unknown as [string, string, string, string, string, string];
  const expected = Buffer.from(hash, 'base64');
  if (expected.length < 16) return false;
  const key = await derive(password, Buffer.from(salt, 'base64'), Number(ln), Number(r), Number(p), expected.length);
  return timingSafeEqual(key, expected);
}

function b64(bytes: Buffer): string {
  return bytes.toString('base64').replace(/=+$/, '');
}
