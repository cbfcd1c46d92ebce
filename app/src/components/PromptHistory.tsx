// The prompts used before (newest first), to pick one again.

import type { ReactNode } from 'react';

export function PromptHistory(props: {
  prompts: { prompt: string; negative_prompt: string; at: number }[];
  onPick: (p: { prompt: string; negative_prompt: string }) => void;
  onClear: () => void;
}): ReactNode {
  if (props.prompts.length === 0) return null;
  return (
    <details className="history">
      <summary>Prompt history ({props.prompts.length})</summary>
      <ul>
        {props.prompts.map((p) => (
          <li key={`${p.at}-${p.prompt}`}>
            <button type="button" className="link" onClick={() => props.onPick(p)}>
              {p.prompt}
              {p.negative_prompt && <span className="muted"> — not: {p.negative_prompt}</span>}
            </button>
          </li>
        ))}
      </ul>
      <button type="button" onClick={props.onClear}>
        Clear history
      </button>
    </details>
  );
}
