// The loaded model's example prompts (`/v1/info` → `model.example_prompts`):
// one click puts one in the prompt.

import type { ReactNode } from 'react';

/** What the prompt box shows while empty: the model's first example, else a generic one. */
export function promptPlaceholder(examples: readonly string[] | undefined): string {
  return examples?.[0] ?? 'Describe the image to make';
}

export function ExamplePrompts(props: { examples: readonly string[] | undefined; onPick: (prompt: string) => void }): ReactNode {
  const { examples, onPick } = props;
  if (!examples || examples.length === 0) return null;
  return (
    <div className="examples" data-testid="example-prompts">
      <span className="muted">Try:</span>
      {examples.map((p) => (
        <button key={p} type="button" onClick={() => onPick(p)}>
          {p}
        </button>
      ))}
    </div>
  );
}
