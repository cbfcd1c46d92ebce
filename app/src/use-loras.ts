// The LoRAs and embeddings of the worker (`GET /v1/loras`, `GET /v1/embeddings`,
// read once the studio opens) and the LoRAs a person chose, kept in
// localStorage so they survive a reload.

import type { Client, EmbeddingInfo, LoraInfo } from '@sd-worker/sdk';
import { useCallback, useEffect, useState } from 'react';
import { MAX_LORAS, restoreChosen, type ChosenLora } from './loras.js';

const STORE_KEY = 'sd-studio:loras';

export interface Loras {
  /** The worker's LoRAs (empty until read, and on a worker without `--lora-dir`). */
  available: LoraInfo[];
  embeddings: EmbeddingInfo[];
  chosen: ChosenLora[];
  /** Adds a LoRA at weight 1 (nothing when chosen already, or at `MAX_LORAS`). */
  add: (name: string) => void;
  remove: (name: string) => void;
  update: (name: string, patch: Partial<ChosenLora>) => void;
  /** Replaces the chosen LoRAs (a dropped PNG's). */
  replace: (chosen: ChosenLora[]) => void;
}

function save(chosen: ChosenLora[]): void {
  try {
    localStorage.setItem(STORE_KEY, JSON.stringify(chosen));
  } catch {
    // not remembered
  }
}

function load(): unknown {
  try {
    return JSON.parse(localStorage.getItem(STORE_KEY) ?? 'null');
  } catch {
    return null;
  }
}

export function useLoras(client: Client | Promise<Client>): Loras {
  const [available, setAvailable] = useState<LoraInfo[]>([]);
  const [embeddings, setEmbeddings] = useState<EmbeddingInfo[]>([]);
  const [chosen, setChosenState] = useState<ChosenLora[]>([]);

  useEffect(() => {
    let live = true;
    void (async () => {
      const c = await client;
      // A worker older than LoRA support answers 404: no section.
      const [loras, embs] = await Promise.all([c.loras().catch(() => []), c.embeddings().catch(() => [])]);
      if (!live) return;
      setAvailable(loras);
      setEmbeddings(embs);
      setChosenState((current) => (current.length > 0 ? current : restoreChosen(load(), loras)));
    })().catch(() => {});
    return () => {
      live = false;
    };
  }, [client]);

  const setChosen = useCallback((next: (list: ChosenLora[]) => ChosenLora[]) => {
    setChosenState((list) => {
      const value = next(list);
      save(value);
      return value;
    });
  }, []);

  const add = useCallback(
    (name: string) =>
      setChosen((list) =>
        list.length >= MAX_LORAS || list.some((c) => c.name === name) ? list : [...list, { name, weight: '1' }],
      ),
    [setChosen],
  );
  const remove = useCallback((name: string) => setChosen((list) => list.filter((c) => c.name !== name)), [setChosen]);
  const update = useCallback(
    (name: string, patch: Partial<ChosenLora>) =>
      setChosen((list) => list.map((c) => (c.name === name ? { ...c, ...patch } : c))),
    [setChosen],
  );
  const replace = useCallback((next: ChosenLora[]) => setChosen(() => next), [setChosen]);
  return { available, embeddings, chosen, add, remove, update, replace };
}
