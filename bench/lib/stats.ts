/**
 * The order statistics the benchmarks report, over samples in any order (each function sorts a copy). Both give
 * NaN for no samples.
 */

/**
 * The nearest-rank `p`th percentile (`p` from 0 to 100): the sample at index `floor(p / 100 * n)` of the `n` sorted
 * samples, the largest for `p` = 100. `percentile(samples, 50)` is the upper of the two middle samples of an even
 * count: the figure most benchmarks here have reported as their p50 or median.
 */
export function percentile(samples: readonly number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** The median: the middle sample, or the mean of the two middle ones for an even count. */
export function median(samples: readonly number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length % 2 === 1) return sorted[mid] as number;
  return ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2;
}
