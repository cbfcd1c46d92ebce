// What the global setup (global-setup.ts) provides to tests, for `inject`.

declare module 'vitest' {
  export interface ProvidedContext {
    /** Base URL of a worker without auth, CORS `*`. */
    workerUrl: string;
    /** Base URL of a worker started with `--api-token test-token`. */
    authWorkerUrl: string;
    /** The token of `authWorkerUrl`. */
    authToken: string;
    /** A kohya LoRA of the tiny model in `workerUrl`'s `--lora-dir` (none in `authWorkerUrl`'s). */
    loraName: string;
    /** A 2-vector embedding in `workerUrl`'s `--embeddings-dir`. */
    embeddingName: string;
  }
}

export {};
