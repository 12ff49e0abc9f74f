// The UI is built into the Python package (src/chatd/web/static) with fixed file names, so the
// server needs no Node and `scripts/check-ui` can compare a rebuild with the committed bundle.
import { defineConfig } from "vitest/config";

export default defineConfig({
  base: "/static/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: "../src/chatd/web/static",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
    // One JS file and one CSS file with stable names: the diff of a rebuild is the diff of the source.
    cssCodeSplit: false,
    chunkSizeWarningLimit: 2000,
    rollupOptions: {
      output: {
        entryFileNames: "assets/app.js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: "assets/[name][extname]",
        inlineDynamicImports: true,
      },
    },
  },
  server: {
    // `npm run dev` against a local `chatd serve` on :8080.
    proxy: { "/api": { target: "http://127.0.0.1:8080", changeOrigin: false } },
  },
  test: {
    environment: "jsdom",
    include: ["test/**/*.test.ts", "test/**/*.test.tsx"],
  },
});
