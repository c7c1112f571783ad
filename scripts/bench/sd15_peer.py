#!/usr/bin/env python3
"""diffusers-on-PyTorch-CPU peer of `npm run bench:sd15` (scripts/bench-sd15.ts).

Times one part of a Stable Diffusion 1.5-size text-to-image run with diffusers' own classes at
SD-1.5's shapes and RANDOM weights (speed does not depend on the values):
  unet  UNet2DConditionModel (block_out_channels 320/640/1280/1280, layers_per_block 2,
        attention_head_dim 8, cross_attention_dim 768): one guided denoising step = one forward
        at batch 2, latents [2, 4, 64, 64], context [2, 77, 768]; --warmup untimed, --steps timed.
  vae   AutoencoderKL (block_out_channels 128/256/512/512, layers_per_block 2, 32 groups, mid
        attention): one decode of [1, 4, 64, 64] latents to a 512x512 image (post_quant_conv included).
  text  CLIPTextModel at CLIP ViT-L/14's text size (hidden 768, 12 layers, 12 heads, MLP 3072):
        one encode of [2, 77] token ids (the prompt and the empty prompt).
Each part also reports how long building the model took (random init, no file read).
Prints one JSON line. The peak RSS is measured from outside (bench-sd15 runs this under
/usr/bin/time), so it covers the interpreter, torch and the model.

Threads: torch.set_num_threads(--threads). The pip wheel of torch brings its own BLAS (MKL) and
OpenMP, so none of the OpenBLAS set-up of ../shared/bench/peer_torch.py is needed; the BLAS is
printed (torch.__config__.show()). As there: OpenMP threads spin at barriers, so another busy
process on a 2-core host slows this side more than its share.

    /work/dvenv/bin/python scripts/bench/sd15_peer.py --part unet --steps 2 --warmup 1 --threads 2
"""
import argparse
import json
import os
import time

import torch


def blas_name():
    cfg = torch.__config__.show()
    for key in ("BLAS_INFO=", "LAPACK_INFO="):
        if key in cfg:
            return cfg.split(key, 1)[1].split(",", 1)[0].strip()
    return "unknown"


def unet_part(args):
    from diffusers import UNet2DConditionModel

    t0 = time.perf_counter()
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        attention_head_dim=8,
        cross_attention_dim=768,
        norm_num_groups=32,
    ).eval()
    init_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(args.seed)
    latents = torch.randn(2, 4, 64, 64, generator=g)
    context = torch.randn(2, 77, 768, generator=g)
    steps_s = []
    with torch.inference_mode():
        for i in range(args.warmup + args.steps):
            t = torch.full((2,), 999 - 40 * i, dtype=torch.long)
            s = time.perf_counter()
            eps = unet(latents, t, encoder_hidden_states=context).sample
            steps_s.append(time.perf_counter() - s)
            assert eps.shape == latents.shape
    params = sum(p.numel() for p in unet.parameters())
    return {"init_s": init_s, "warmup_s": steps_s[: args.warmup], "step_s": steps_s[args.warmup :], "params": params}


def vae_part(args):
    from diffusers import AutoencoderKL

    t0 = time.perf_counter()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=512,
    ).eval()
    init_s = time.perf_counter() - t0
    z = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(args.seed))
    with torch.inference_mode():
        s = time.perf_counter()
        image = vae.decode(z / 0.18215).sample
        decode_s = time.perf_counter() - s
    assert tuple(image.shape) == (1, 3, 512, 512)
    decoder_params = sum(p.numel() for p in vae.decoder.parameters()) + sum(p.numel() for p in vae.post_quant_conv.parameters())
    return {"init_s": init_s, "decode_s": decode_s, "params": decoder_params}


def text_part(args):
    from transformers import CLIPTextConfig, CLIPTextModel

    t0 = time.perf_counter()
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
    )
    model = CLIPTextModel(config).eval()
    init_s = time.perf_counter() - t0
    ids = torch.randint(0, 49407, (2, 77), generator=torch.Generator().manual_seed(args.seed))
    ids[:, -1] = 49407
    times = []
    with torch.inference_mode():
        for _ in range(args.warmup + max(1, args.steps)):
            s = time.perf_counter()
            h = model(input_ids=ids).last_hidden_state
            times.append(time.perf_counter() - s)
    assert tuple(h.shape) == (2, 77, 768)
    params = sum(p.numel() for p in model.parameters())
    return {"init_s": init_s, "warmup_s": times[: args.warmup], "encode_s": times[args.warmup :], "params": params}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["unet", "vae", "text"], required=True)
    p.add_argument("--steps", type=int, default=2, help="timed U-Net steps (text: timed encodes)")
    p.add_argument("--warmup", type=int, default=1, help="untimed U-Net steps / text encodes first")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        p.error(f"--steps must be >= 1, --warmup >= 0, --threads >= 1; got {args.steps}, {args.warmup}, {args.threads}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import diffusers

    result = {"vae": vae_part, "unet": unet_part, "text": text_part}[args.part](args)
    result.update(
        part=args.part,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        diffusers=diffusers.__version__,
        blas=blas_name(),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
