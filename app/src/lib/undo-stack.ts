// A bounded undo/redo history of states (the mask editor keeps ImageData in it).

export class UndoStack<T> {
  readonly #limit: number;
  #past: T[] = [];
  #future: T[] = [];

  constructor(limit = 50) {
    this.#limit = limit;
  }

  /** Records the state before a change; clears the redo side. */
  push(state: T): void {
    this.#past.push(state);
    if (this.#past.length > this.#limit) this.#past.shift();
    this.#future = [];
  }

  /** The state to go back to, given the current one; undefined when there is none. */
  undo(current: T): T | undefined {
    const state = this.#past.pop();
    if (state !== undefined) this.#future.push(current);
    return state;
  }

  redo(current: T): T | undefined {
    const state = this.#future.pop();
    if (state !== undefined) this.#past.push(current);
    return state;
  }

  clear(): void {
    this.#past = [];
    this.#future = [];
  }

  get canUndo(): boolean {
    return this.#past.length > 0;
  }

  get canRedo(): boolean {
    return this.#future.length > 0;
  }
}
