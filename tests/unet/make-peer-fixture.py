#!/usr/bin/python3
"""Runs /work/shared/bench/peer_torch.py's UNet and VAE on weights and inputs dumped by
make-peer-fixture.ts; writes their outputs (NHWC) as JSON. Usage: make-peer-fixture.py IN OUT

Our parameters are matched to the peer's by registration order (both list them in the same
order), transposed from our layouts (conv [kh, kw, in, out], linear [in, out]) to PyTorch's.
F.gelu is switched to its tanh form, the GELU our GEGLU uses."""
import json
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, "/work/shared/bench")
import peer_torch  # noqa: E402

_gelu = F.gelu
peer_torch.F.gelu = lambda x: _gelu(x, approximate="tanh")


def load(model, ours):
    theirs = list(model.state_dict().items())
    assert len(theirs) == len(ours), f"{len(theirs)} peer tensors, {len(ours)} ours"
    state = {}
    for (name, ref), o in zip(theirs, ours):
        t = torch.tensor(o["data"], dtype=torch.float32).reshape(o["shape"])
        t = t.permute(3, 2, 0, 1) if t.dim() == 4 else t.t() if t.dim() == 2 else t
        assert tuple(t.shape) == tuple(ref.shape), f"{o['name']} -> {name}: {tuple(t.shape)} vs {tuple(ref.shape)}"
        state[name] = t.contiguous()
    model.load_state_dict(state)


def main():
    d = json.load(open(sys.argv[1]))
    unet = peer_torch.UNet(d["unetConfig"])
    vae = peer_torch.VAE(d["vaeConfig"], d["vaeConfig"]["imageChannels"])
    load(unet, d["unet"])
    load(vae, d["vae"])
    tensor = lambda a: torch.tensor(a["data"], dtype=torch.float32).reshape(a["shape"])
    nchw, nhwc = (lambda t: t.permute(0, 3, 1, 2)), (lambda t: t.permute(0, 2, 3, 1))
    with torch.no_grad():
        eps = unet(nchw(tensor(d["sample"])), tensor(d["timesteps"]).long(), tensor(d["context"]))
        mean, logvar = vae.encode(nchw(tensor(d["images"])))
        decoded = vae.decode(mean)
    out = {"about": f"Outputs of /work/shared/bench/peer_torch.py (torch {torch.__version__}, CPU float32, F.gelu in tanh form) "
                    "for the weights and inputs of tests/unet/peer-fixture.ts; NHWC. Made by make-peer-fixture.ts."}
    for key, t in (("eps", eps), ("mean", mean), ("logvar", logvar), ("decoded", decoded)):
        t = nhwc(t)
        out[key] = {"shape": list(t.shape), "data": [float("%.6g" % v) for v in t.flatten().tolist()]}
    json.dump(out, open(sys.argv[2], "w"))


main()
