import { ApprMetrics, type AuditEvent, type RegistryOptions } from '../../lib/index.js';

/**
 * The operations options whose cost the ops benchmarks measure: `metrics` (ApprMetrics) and an `audit` hook that
 * keeps every event in memory, as a host's cheapest hook would; nothing when `on` is false (the plain baseline).
 */
export function opsOptions(on: boolean): Pick<RegistryOptions, 'metrics' | 'audit'> {
  if (!on) return {};
  const events: AuditEvent[] = [];
  return {
    metrics: new ApprMetrics(),
    audit: (e: AuditEvent) => {
      events.push(e);
    },
  };
}
