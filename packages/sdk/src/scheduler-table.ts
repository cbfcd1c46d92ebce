// Generated from sdk-wasm/src/schedulers.rs (`typescript_module`): do not edit.
// `SD_WORKER_SDK_WRITE_TS=1 cargo test -p sd-worker-sdk schedulers` rewrites it;
// that test fails while this file is stale.

import type { SchedulerName, SchedulerSpec } from '../wasm/sd_worker_sdk.js';

/** Every scheduler of the contract, in the worker's order. */
export const SCHEDULERS: readonly SchedulerSpec[] = [
  {
    "name": "ddim",
    "label": "DDIM",
    "a1111": "DDIM",
    "a1111_sampler": "DDIM",
    "aliases": [],
    "flow_matching": false
  },
  {
    "name": "ddpm",
    "label": "DDPM",
    "a1111": "DDPM",
    "a1111_sampler": "DDPM",
    "aliases": [],
    "flow_matching": false
  },
  {
    "name": "euler",
    "label": "Euler",
    "a1111": "Euler",
    "a1111_sampler": "Euler",
    "aliases": [
      "k_euler"
    ],
    "flow_matching": false
  },
  {
    "name": "euler_a",
    "label": "Euler ancestral",
    "a1111": "Euler a",
    "a1111_sampler": "Euler a",
    "aliases": [
      "euler_ancestral",
      "k_euler_a"
    ],
    "flow_matching": false
  },
  {
    "name": "dpmpp_2m",
    "label": "DPM++ 2M",
    "a1111": "DPM++ 2M",
    "a1111_sampler": "DPM++ 2M",
    "aliases": [
      "dpm++_2m",
      "k_dpmpp_2m"
    ],
    "flow_matching": false
  },
  {
    "name": "dpmpp_2m_karras",
    "label": "DPM++ 2M Karras",
    "a1111": "DPM++ 2M Karras",
    "a1111_sampler": "DPM++ 2M",
    "a1111_schedule": "Karras",
    "aliases": [
      "dpm++_2m_karras",
      "k_dpmpp_2m_ka"
    ],
    "flow_matching": false
  },
  {
    "name": "unipc",
    "label": "UniPC",
    "a1111": "UniPC",
    "a1111_sampler": "UniPC",
    "aliases": [
      "uni_pc"
    ],
    "flow_matching": false
  },
  {
    "name": "lcm",
    "label": "LCM",
    "a1111": "LCM",
    "a1111_sampler": "LCM",
    "aliases": [],
    "flow_matching": false
  },
  {
    "name": "flow_euler",
    "label": "Flow Euler",
    "a1111": "Euler",
    "a1111_sampler": "Euler",
    "aliases": [],
    "flow_matching": true
  }
];

/**
 * Each accepted spelling, lower-cased (wire name, label, A1111 name, alias), to the
 * schedulers it may name: two for "euler" (`euler`, `flow_euler`), told apart by the
 * model's family.
 */
export const SCHEDULER_SPELLINGS: ReadonlyMap<string, readonly SchedulerName[]> = new Map<
  string,
  readonly SchedulerName[]
>([
  ["ddim",["ddim"]],
  ["ddpm",["ddpm"]],
  ["dpm++ 2m",["dpmpp_2m"]],
  ["dpm++ 2m karras",["dpmpp_2m_karras"]],
  ["dpm++_2m",["dpmpp_2m"]],
  ["dpm++_2m_karras",["dpmpp_2m_karras"]],
  ["dpmpp_2m",["dpmpp_2m"]],
  ["dpmpp_2m_karras",["dpmpp_2m_karras"]],
  ["euler",["euler","flow_euler"]],
  ["euler a",["euler_a"]],
  ["euler ancestral",["euler_a"]],
  ["euler_a",["euler_a"]],
  ["euler_ancestral",["euler_a"]],
  ["flow euler",["flow_euler"]],
  ["flow_euler",["flow_euler"]],
  ["k_dpmpp_2m",["dpmpp_2m"]],
  ["k_dpmpp_2m_ka",["dpmpp_2m_karras"]],
  ["k_euler",["euler"]],
  ["k_euler_a",["euler_a"]],
  ["lcm",["lcm"]],
  ["uni_pc",["unipc"]],
  ["unipc",["unipc"]]
]);
