import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

export default defineConfig({
  plugins: [react()],
  // The worker serves the app at `/`; client routes fall back to index.html there.
  base: '/',
  build: { target: 'es2022', sourcemap: false, assetsInlineLimit: 0 },
  // In `vite dev` a pre-bundled SDK would lose track of its .wasm file.
  optimizeDeps: { exclude: ['@sd-worker/sdk'] },
});
