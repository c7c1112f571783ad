#!/usr/bin/env node
// Entry point of `npx txt2img`: runs the TypeScript CLI through tsx (a runtime dependency).
import { register } from 'tsx/esm/api';

register();
await import('../scripts/txt2img.ts');
