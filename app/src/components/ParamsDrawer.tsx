import { useEffect, useEffectEvent, useRef, useState, type ReactNode } from 'react';

/** Where the parameters become a drawer (styles.css says the same). */
export const PHONE_QUERY = '(max-width: 820px)';

function useMediaQuery(query: string): boolean {
  const [matches, setMatches] = useState(() => typeof window.matchMedia === 'function' && window.matchMedia(query).matches);
  useEffect(() => {
    if (typeof window.matchMedia !== 'function') return;
    const list = window.matchMedia(query);
    const changed = () => setMatches(list.matches);
    changed();
    list.addEventListener('change', changed);
    return () => list.removeEventListener('change', changed);
  }, [query]);
  return matches;
}

/**
 * The parameters: a sidebar on a wide screen, a modal drawer on a phone. Open
 * on a phone it is a dialog: focus moves in, Escape closes it, and focus goes
 * back to what opened it.
 */
export function ParamsDrawer({ open, onClose, children }: { open: boolean; onClose: () => void; children: ReactNode }) {
  const modal = useMediaQuery(PHONE_QUERY) && open;
  const panel = useRef<HTMLElement>(null);
  const closeButton = useRef<HTMLButtonElement>(null);
  const close = useEffectEvent(onClose);
  useEffect(() => {
    if (!modal) return;
    const node = panel.current;
    const opener = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    if (!node?.contains(document.activeElement)) closeButton.current?.focus();
    const key = (e: KeyboardEvent) => {
      if (e.key !== 'Escape') return;
      e.preventDefault();
      close();
    };
    document.addEventListener('keydown', key);
    return () => {
      document.removeEventListener('keydown', key);
      if (opener?.isConnected && !node?.contains(opener)) opener.focus();
    };
  }, [modal]);
  const dialog = modal ? ({ role: 'dialog', 'aria-modal': true, 'aria-labelledby': 'params-title' } as const) : { 'aria-label': 'Parameters' };
  return (
    <>
      <aside id="params" ref={panel} className={open ? 'params open' : 'params'} {...dialog}>
        <div className="params-head">
          <h2 id="params-title">Parameters</h2>
          <button type="button" ref={closeButton} className="drawer-close" onClick={onClose} aria-label="Close parameters">
            ✕
          </button>
        </div>
        {children}
      </aside>
      {open && <button type="button" className="backdrop" aria-label="Close parameters" tabIndex={-1} onClick={onClose} />}
    </>
  );
}
