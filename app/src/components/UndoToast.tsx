// "Deleted · Undo": shown for a few seconds after a gallery image is deleted.

import type { ReactNode } from 'react';

export function UndoToast(props: { message: string | null; onUndo: () => void }): ReactNode {
  const { message, onUndo } = props;
  if (!message) return null;
  return (
    <div className="toast" role="status" aria-live="polite" data-testid="undo-toast">
      <span>{message}</span>
      <button type="button" onClick={onUndo}>
        Undo
      </button>
    </div>
  );
}
