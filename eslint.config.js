// Lint: typescript-eslint's recommended rules over the sources, tests, benchmarks and scripts.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// dist/: the JavaScript that scripts/build.js compiles from src/.
const ignored = { ignores: ['node_modules/**', 'coverage/**', 'dist/**', 'dist.next/**'] };

export default tseslint.config(ignored, js.configs.recommended, ...tseslint.configs.recommended, {
  languageOptions: {
    globals: {
      process: 'readonly',
      console: 'readonly',
      setTimeout: 'readonly',
      clearTimeout: 'readonly',
      setInterval: 'readonly',
      clearInterval: 'readonly',
      Buffer: 'readonly',
      URL: 'readonly',
      performance: 'readonly',
      fetch: 'readonly',
      structuredClone: 'readonly',
      global: 'readonly',
      NodeJS: 'readonly',
      AbortController: 'readonly',
      AbortSignal: 'readonly',
      TextDecoder: 'readonly',
      TextEncoder: 'readonly',
      queueMicrotask: 'readonly',
      setImmediate: 'readonly',
    },
  },
  rules: {
    '@typescript-eslint/no-explicit-any': 'off',
    '@typescript-eslint/no-non-null-assertion': 'off',
    '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    'no-control-regex': 'off',
  },
});
