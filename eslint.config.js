// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'data/', '.tmp/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    // The type-aware rules read each file's types through tsconfig.json (lib, test, examples, bench).
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // Unused names are errors, except deliberately ignored ones (`_chunk`, `_ctx`).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // An `async` function without `await` is how this code implements a Promise-returning interface (the storage
      // adapters, the metrics collectors, Koa handlers): a synchronous throw becomes a rejection, as callers expect.
      '@typescript-eslint/require-await': 'off',
      // Passing a caught error on unchanged (typed `unknown`) is not rejecting with a literal.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      // Promise.all over values of which only some are promises (a visibility filter may answer synchronously) is
      // deliberate: no promise per value when none is pending. An array that can hold no promise is still an error.
      '@typescript-eslint/await-thenable': ['error', { allowMixedPromiseArrays: true }],
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      // Tests read JSON response bodies as `any`: their shape is what the test asserts, so the no-unsafe-* rules
      // would flag every assertion on a body.
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      // Test helpers are objects of arrow functions (`const { req, push } = t`), which keep no `this` to lose.
      '@typescript-eslint/unbound-method': 'off',
    },
  },
  {
    // Plain JavaScript config files are outside tsconfig.json: no type information for them.
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    ...tseslint.configs.disableTypeChecked,
  },
);
