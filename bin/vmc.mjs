#!/usr/bin/env node
// `npx vmc` in a checkout: the bundle built by `npm ci` (prepare) or `npm run build`.
import "../dist/vmc.mjs";
