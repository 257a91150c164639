import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../../lib/server/cli.ts', import.meta.url));

export interface Instance {
  url: string;
  process: ChildProcess;
  output: () => string;
  stop: () => Promise<void>;
}

/** The CLI (`koa-appr <args>`) from source, as a child process whose stdout and stderr are collected in `output()`. */
function spawnCli(args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const collect = (chunk: Buffer): void => {
    output += chunk.toString();
  };
  child.stdout.on('data', collect);
  child.stderr.on('data', collect);
  return { child, output: () => output };
}

/**
 * Start the standalone server (`koa-appr serve`, from source) as a separate OS process (so tests exercise what really happens with several
 * registry instances: no shared memory, only the shared storage). Resolves with the URL it logged.
 */
export async function startInstance(env: Record<string, string>): Promise<Instance> {
  const { child, output } = spawnCli(['serve'], { APPR_LOG_LEVEL: 'warn', ...env });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`instance did not start:\n${output()}`)), 20_000);
    const check = (): void => {
      const match = /listening on (http:\/\/\S+)/.exec(output());
      if (match?.[1]) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`instance exited with ${code}:\n${output()}`));
    });
  });
  return {
    url,
    process: child,
    output,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      await once(child, 'exit');
    },
  };
}

/** Run the CLI (`koa-appr <args>`) from source to completion; resolves with its exit code and output. */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; out: string }> {
  const { child, output } = spawnCli(args, env);
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, out: output() })));
}

export async function startInstances(count: number, env: Record<string, string>): Promise<Instance[]> {
  return Promise.all(Array.from({ length: count }, () => startInstance(env)));
}
