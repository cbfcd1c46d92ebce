import type { ReactNode } from 'react';

/**
 * A worker's message with its markdown code spans (`width`) as <code>, not as
 * literal backticks. An unpaired backtick stays as it is.
 */
export function CodeText({ text }: { text: string }): ReactNode {
  const parts = text.split(/`([^`]+)`/);
  if (parts.length === 1) return text;
  return parts.map((part, i) => (i % 2 === 1 ? <code key={i}>{part}</code> : part));
}
