// The scheduler vocabulary of the contract (sdk-wasm/src/schedulers.rs): wire
// names, labels, AUTOMATIC1111's names. The table itself is generated into
// scheduler-table.ts; these are the look-ups on it.

import type { SchedulerName, SchedulerSpec } from '../wasm/sd_worker_sdk.js';
import { SCHEDULERS, SCHEDULER_SPELLINGS } from './scheduler-table.js';

export { SCHEDULERS, SCHEDULER_SPELLINGS };

/** The row of a wire name, or undefined for a name this SDK does not know. */
export function schedulerSpec(name: string): SchedulerSpec | undefined {
  return SCHEDULERS.find((s) => s.name === name);
}

export function isSchedulerName(name: string): name is SchedulerName {
  return schedulerSpec(name) !== undefined;
}

/** What a person sees for a wire name ("Euler ancestral"); an unknown name as it is. */
export function schedulerLabel(name: string): string {
  return schedulerSpec(name)?.label ?? name;
}

/** The first scheduler of `names` that `accepted` holds (all of `names` when no list is given). */
function pick(names: readonly SchedulerName[], accepted?: readonly string[]): SchedulerName | undefined {
  return names.find((n) => !accepted || accepted.includes(n));
}

/**
 * The scheduler a spelling names, as the worker reads a request's `scheduler`:
 * wire name, label, A1111 sampler name or alias, in any case. `accepted` (a
 * model's `/v1/info` `schedulers`) decides between the schedulers one spelling
 * may name: "Euler" is `flow_euler` on a flow-matching model, `euler` otherwise.
 */
export function parseScheduler(spelling: string, accepted?: readonly string[]): SchedulerName | undefined {
  return pick(SCHEDULER_SPELLINGS.get(spelling.toLowerCase()) ?? [], accepted);
}

/**
 * The scheduler of an A1111 infotext's `Sampler` and, from A1111 1.9 on, its
 * `Schedule type` ("Karras"; "Automatic" or absent: the sampler's own). Undefined
 * when no scheduler of the contract is that pair.
 */
export function schedulerFromA1111(
  sampler: string,
  scheduleType?: string,
  accepted?: readonly string[],
): SchedulerName | undefined {
  const schedule = scheduleType?.trim().toLowerCase();
  if (!schedule || schedule === 'automatic') return parseScheduler(sampler, accepted);
  const names = SCHEDULERS.filter(
    (s) =>
      s.a1111_sampler.toLowerCase() === sampler.toLowerCase() && s.a1111_schedule?.toLowerCase() === schedule,
  ).map((s) => s.name);
  // Some tools write both: `Sampler: DPM++ 2M Karras, Schedule type: Karras`.
  const named = parseScheduler(sampler, accepted);
  if (named && schedulerSpec(named)?.a1111_schedule?.toLowerCase() === schedule) names.push(named);
  return pick(names, accepted);
}
