// The request behind each job, remembered until its images are in the gallery
// (a job may finish after a reload, when nothing else knows what was asked).

import type { JobParams, Mode } from './form.js';

const JOB = 'sd-studio:job:';
const PENDING = 'sd-studio:pending:';

function read(key: string): JobParams | null {
  try {
    const raw = localStorage.getItem(key);
    return raw ? (JSON.parse(raw) as JobParams) : null;
  } catch {
    return null;
  }
}

function write(key: string, params: JobParams | null): void {
  try {
    if (params) localStorage.setItem(key, JSON.stringify(params));
    else localStorage.removeItem(key);
  } catch {
    // storage refused: the gallery entry will have no parameters
  }
}

/** Before submitting: what the mode is about to ask for. */
export function setPending(mode: Mode, params: JobParams): void {
  write(PENDING + mode, params);
}

/** Once accepted: the job's own record. */
export function setJobParams(jobId: string, params: JobParams): void {
  write(JOB + jobId, params);
}

export function jobParams(jobId: string, mode: Mode): JobParams | null {
  return read(JOB + jobId) ?? read(PENDING + mode);
}

export function forgetJobParams(jobId: string): void {
  write(JOB + jobId, null);
}
