import { useState } from 'react';

/**
 * The worker's message for `field`, until that field changes: a corrected
 * value no longer shows the old refusal. `values` holds every editable value
 * by the first segment of its field name (`width`, `loras`, `controlnets`…);
 * a change is a new value (strings by content, objects by identity).
 */
export function useServerFieldError(
  error: { message: string } | null,
  field: string | null,
  values: Record<string, unknown>,
): string | null {
  const key = field ? field.split(/[.[]/)[0]! : '';
  const value = values[key];
  const [seen, setSeen] = useState<{ error: unknown; value: unknown }>({ error: null, value: undefined });
  if (!error || !field) return null;
  if (seen.error !== error) {
    // A new refusal: remember the value it was about.
    setSeen({ error, value });
    return error.message;
  }
  return Object.is(seen.value, value) ? error.message : null;
}
