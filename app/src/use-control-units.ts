// The ControlNet units of the studio: added, changed and removed by a person,
// kept in IndexedDB with their images (too large for localStorage) so they
// survive a reload.

import type { WorkerInfo } from '@sd-worker/sdk';
import { useCallback, useEffect, useRef, useState } from 'react';
import { MAX_UNITS, newUnit, restoreUnits, type ControlUnit } from './controlnet.js';
import { getValue, setValue } from './lib/gallery-db.js';

const STORE_KEY = 'controlnets';

export interface ControlUnits {
  units: ControlUnit[];
  add: () => void;
  remove: (key: string) => void;
  update: (key: string, patch: Partial<ControlUnit>) => void;
}

export function useControlUnits(info: WorkerInfo): ControlUnits {
  const [units, setUnits] = useState<ControlUnit[]>([]);
  // Nothing is written before the stored units are read (or found missing).
  const loaded = useRef(false);

  useEffect(() => {
    let live = true;
    void getValue<Partial<ControlUnit>[]>(STORE_KEY)
      .catch(() => undefined)
      .then((saved) => {
        if (!live) return;
        loaded.current = true;
        setUnits((current) => (current.length > 0 ? current : restoreUnits(info, saved)));
      });
    return () => {
      live = false;
    };
  }, [info]);

  useEffect(() => {
    if (loaded.current) void setValue(STORE_KEY, units).catch(() => {});
  }, [units]);

  const add = useCallback(() => {
    loaded.current = true;
    setUnits((list) => (list.length >= MAX_UNITS ? list : [...list, newUnit(info)]));
  }, [info]);
  const remove = useCallback((key: string) => setUnits((list) => list.filter((u) => u.key !== key)), []);
  const update = useCallback(
    (key: string, patch: Partial<ControlUnit>) =>
      setUnits((list) => list.map((u) => (u.key === key ? { ...u, ...patch } : u))),
    [],
  );
  return { units, add, remove, update };
}
