/**
 * Issue 12 item 18: what `engines` promises holds for the S3 SDK we test with. AWS announced that SDK releases
 * after the first week of January 2027 require Node >= 22 (and warns about it on Node 20); ours says `>=20.19`.
 * The development SDK is pinned (`~3.1175.0`, lockfile too) and every installed package of the SDK must accept
 * our Node floor: a refresh that pulls a Node-22-only release fails here, not on a host's Node 20.
 */
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';

const root = process.cwd();
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
  engines: { node: string };
  devDependencies: Record<string, string>;
};

/** The lowest version a `>=X.Y.Z` (or `>=X.Y`, `>=X`) range admits; other forms are not expected here. */
function floor(range: string): number[] {
  const m = /^>=\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(range.trim());
  if (!m) throw new Error(`engines.node ${JSON.stringify(range)} is not a plain >= range: check it by hand`);
  return [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
}

const atMost = (a: number[], b: number[]): boolean => {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return (a[i] ?? 0) < (b[i] ?? 0);
  return true;
};

function sdkPackages(): string[] {
  const out: string[] = [];
  for (const scope of ['@aws-sdk', '@smithy', '@aws-crypto']) {
    const dir = join(root, 'node_modules', scope);
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) out.push(join(dir, name, 'package.json'));
  }
  return out.filter((p) => existsSync(p));
}

describe('engines: the S3 SDK we pin supports our Node floor', () => {
  const ours = floor(pkg.engines.node);

  it('states Node >= 20.19 and pins the development SDK to one minor release', () => {
    expect(pkg.engines.node).to.equal('>=20.19');
    expect(pkg.devDependencies['@aws-sdk/client-s3']).to.match(/^~3\.\d+\.\d+$/);
  });

  it('every installed @aws-sdk, @smithy and @aws-crypto package accepts Node 20.19', () => {
    const packages = sdkPackages();
    expect(packages.length).to.be.greaterThan(10);
    for (const path of packages) {
      const { name, engines } = JSON.parse(readFileSync(path, 'utf8')) as { name: string; engines?: { node?: string } };
      if (!engines?.node) continue;
      expect(
        atMost(floor(engines.node), ours),
        `${name} needs Node ${engines.node}, engines says ${pkg.engines.node}`,
      ).to.equal(true);
    }
  });
});
