// Prompt history: the last prompts submitted, newest first, in localStorage.

export interface PromptRecord {
  prompt: string;
  negative_prompt: string;
  at: number;
}

const KEY = 'sd-studio:prompts';
const LIMIT = 50;

export function loadPrompts(): PromptRecord[] {
  try {
    const raw = JSON.parse(localStorage.getItem(KEY) ?? '[]') as unknown;
    return Array.isArray(raw) ? (raw as PromptRecord[]).filter((r) => typeof r?.prompt === 'string') : [];
  } catch {
    return [];
  }
}

/** Adds the prompt on top (moving an identical one up); returns the new list. */
export function rememberPrompt(list: PromptRecord[], prompt: string, negative_prompt: string): PromptRecord[] {
  const next = [
    { prompt, negative_prompt, at: Date.now() },
    ...list.filter((r) => r.prompt !== prompt || r.negative_prompt !== negative_prompt),
  ].slice(0, LIMIT);
  try {
    localStorage.setItem(KEY, JSON.stringify(next));
  } catch {
    // storage full or refused: the history lives for this page only
  }
  return next;
}

export function clearPrompts(): PromptRecord[] {
  try {
    localStorage.removeItem(KEY);
  } catch {
    // ignore
  }
  return [];
}
