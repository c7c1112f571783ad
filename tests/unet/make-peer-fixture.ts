/**
 * Regenerates tests/unet/peer-fixture.json (not a test; run by hand, needs Debian's python3-torch):
 *   npx tsx tests/unet/make-peer-fixture.ts
 * Builds the tiny U-Net and VAE of peer-fixture.ts, writes their (perturbed) weights and inputs
 * to a temp folder, runs make-peer-fixture.py (which loads them into peer_torch.py's classes and
 * runs those) and stores the peer's outputs. Only needed when the architecture changes on purpose.
 */
import type * as tf from '@tensorflow/tfjs';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend } from '../../src/backend/index.js';
import type { ParamStore } from '../../src/nn/params.js';
import { Generator } from '../../src/random/generator.js';
import { UNet2DCondition } from '../../src/unet/unet2d-condition.js';
import { AutoencoderKL } from '../../src/vae/autoencoder-kl.js';
import { PEER_UNET_CONFIG, PEER_VAE_CONFIG, peerUNetInputs, peerVaeInputs, perturbParams } from './peer-fixture.js';

const here = path.dirname(fileURLToPath(import.meta.url));
await initBackend({ backend: 'cpu', quiet: true });
const unet = new UNet2DCondition(PEER_UNET_CONFIG, new Generator(0));
perturbParams(unet.store, 7);
const vae = new AutoencoderKL(PEER_VAE_CONFIG, new Generator(0));
perturbParams(vae.store, 8);
const arr = (t: tf.Tensor) => ({ shape: t.shape, data: Array.from(t.dataSync()) });
const dump = (store: ParamStore) => store.entries().map(([name, v]) => ({ name, ...arr(v) }));
const ui = peerUNetInputs();
const vi = peerVaeInputs();
const dir = mkdtempSync(path.join(os.tmpdir(), 'peer-fixture-'));
try {
  writeFileSync(
    path.join(dir, 'in.json'),
    JSON.stringify({
      unetConfig: unet.config,
      vaeConfig: vae.config,
      unet: dump(unet.store),
      vae: dump(vae.store),
      sample: arr(ui.sample),
      timesteps: arr(ui.timesteps),
      context: arr(ui.context),
      images: arr(vi.images),
    }),
  );
  execFileSync('/usr/bin/python3', [path.join(here, 'make-peer-fixture.py'), path.join(dir, 'in.json'), path.join(dir, 'out.json')], { stdio: 'inherit' });
  const peer = JSON.parse(readFileSync(path.join(dir, 'out.json'), 'utf8'));
  writeFileSync(path.join(here, 'peer-fixture.json'), `${JSON.stringify(peer)}\n`);
  console.log(`wrote ${path.join(here, 'peer-fixture.json')}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
