"""GPU timing of inversion + edit at 512x512 on LCM-Dreamshaper-sized networks.

Random weights are enough for timing: the UNet has SD-1.5's shape with LCM's
w-embedding (time_cond_proj_dim 256), the VAE and a 12-layer CLIP text encoder
have SD's sizes. Reports one UNet call (batch 1 and 2), then for the inversion and
each edit configuration the median wall time, NFE, and where the time went (text
encoder, VAE encode, UNet, VAE decode, the rest: one more, instrumented run), the
overhead against the UNet calls alone and peak memory. Runs on CPU too: the
full-size proxy of the README. Targets (issue): inversion <= 0.3 s and inversion +
edit <= 1 s on an H100 in fp16.

    python benchmarks/gpu_bench.py --inverter rnri --edits p2p,p2p-localblend,masactrl-mask --steps 4 [--compile] [--json out.json]
    python benchmarks/gpu_bench.py --tiny --device cpu   # smoke test of the script itself
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import AutoencoderKL, AutoencoderTiny, DDIMScheduler, LCMScheduler, UNet2DConditionModel  # noqa: E402

from editing import edit  # noqa: E402
from inversion.benchmark import profiled  # noqa: E402
from inversion.models.tiny import SD_SCHEDULER, tiny_sd  # noqa: E402
from inversion.models.tokenizers import build_clip_tokenizer, clip_text_encoder  # noqa: E402
from inversion.models.unet_model import UNetModel, schedule_fields  # noqa: E402
from inversion.pipeline import invert  # noqa: E402


def lcm_sized(device: str, dtype: torch.dtype) -> UNetModel:
    torch.manual_seed(0)
    tok = build_clip_tokenizer()
    text = clip_text_encoder(tok, hidden=768, intermediate=3072, heads=12, layers=12)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, time_cond_proj_dim=256)  # SD-1.5 defaults
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4)
    for m in (text, unet, vae):
        m.to(device=device, dtype=dtype).eval().requires_grad_(False)
    taesd = AutoencoderTiny(**TAESD_CONFIG).to(device=device, dtype=dtype).eval().requires_grad_(False)  # madebyollin/taesd's published config
    sched = LCMScheduler.from_config(DDIMScheduler(**SD_SCHEDULER).config)
    return UNetModel(
        name="lcm-sized", family="lcm", sampler_kind="lcm", **schedule_fields(sched), device=torch.device(device), dtype=dtype, latent_channels=4, default_steps=4,
        default_guidance=8.5, default_edit_guidance=8.5, uses_cfg=False, image_size=512, size_multiple=64, latent_scale=8,
        unet_module=unet, text_encoder=text, tokenizer=tok, vae=vae, scaling_factor=0.18215, preview_vae=taesd,
    )


TAESD_CONFIG = dict(act_fn="relu", encoder_block_out_channels=(64,) * 4, decoder_block_out_channels=(64,) * 4, num_encoder_blocks=(1, 3, 3, 3),
                    num_decoder_blocks=(3, 3, 3, 1), latent_magnitude=3, latent_shift=0.5, scaling_factor=1.0, upsampling_scaling_factor=2)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int):
    fn()  # warm-up (and compilation)
    times, out = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


CONFIGS = {  # name -> (editor, parameters): the attention-map capture of LocalBlend and MasaCtrl's mask cost memory
    "p2p": ("p2p", {}),
    "p2p-localblend": ("p2p", {"blend_words": "cat,dog"}),
    "masactrl": ("masactrl", {}),
    "masactrl-mask": ("masactrl", {"mask_word": "cat", "mask_target_word": "dog"}),
    "diffedit": ("diffedit", {}),
}


def breakdown_row(what: str, seconds: float, nfe: int, prof) -> dict:
    return {"what": what, "seconds": seconds, "nfe": nfe, **prof.fields(seconds, nfe)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="float16 (default on CUDA) or float32")
    ap.add_argument("--inverter", default="rnri")
    ap.add_argument("--edits", default="p2p", help=f"comma-separated, of: {', '.join(CONFIGS)}")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet (inversion path)")
    ap.add_argument("--tiny", action="store_true", help="tiny random model instead (smoke test)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype) if a.dtype else (torch.float16 if a.device.startswith("cuda") else torch.float32)
    model = tiny_sd(lcm=True, device=a.device) if a.tiny else lcm_sized(a.device, dtype)
    if a.compile:
        model.unet_module = torch.compile(model.unet_module, mode="max-autotune-no-cudagraphs", fullgraph=False)
    size = 64 if a.tiny else a.size
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(a.device) * 2 - 1
    prompt, target = "a photo of a cat sitting on a sofa", "a photo of a dog sitting on a sofa"
    report = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device, "dtype": str(dtype), "compile": a.compile,
              "size": size, "steps": a.steps, "inverter": a.inverter, "threads": torch.get_num_threads()}
    for batch in (1, 2):
        cond = model.encode_prompt([prompt] * batch)
        z = torch.randn(batch, 4, size // 8, size // 8, device=a.device)
        report[f"unet_call_b{batch}_s"], _ = timed(lambda z=z, cond=cond: model.predict_noise(z, 500, cond), a.device, a.repeats)
    z = torch.randn(1, 4, size // 8, size // 8, device=a.device)
    report["decode_full_s"], _ = timed(lambda: model.decode(z), a.device, a.repeats)  # one image: the final edit and the metrics
    report["decode_preview_s"], _ = timed(lambda: model.preview(z), a.device, a.repeats)  # TAESD: live mode's preview
    inv_s, inv = timed(lambda: invert(model, x, prompt, a.inverter, a.steps), a.device, a.repeats)
    with profiled(model) as prof:  # one more run, instrumented: where the time goes
        inv = invert(model, x, prompt, a.inverter, a.steps)
    rows = [breakdown_row(f"{a.inverter} inversion", inv_s, inv.nfe, prof)]
    for name in a.edits.split(","):
        editor, params = CONFIGS[name]
        edit_s, out = timed(lambda editor=editor, params=params: edit(model, inv, target, editor, **params), a.device, a.repeats)
        with profiled(model) as prof:
            out = edit(model, inv, target, editor, **params)
        rows.append(breakdown_row(f"{name} edit", edit_s, out.nfe, prof))
    if a.device.startswith("cuda"):
        report["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
    report["rows"] = rows
    for k, v in report.items():
        if k != "rows":
            print(f"{k:18s} {v:.4f}" if isinstance(v, float) else f"{k:18s} {v}")
    cols = ["what", "seconds", "nfe", "text_s", "vae_encode_s", "unet_s", "vae_decode_s", "rest_s", "rest_fraction", "overhead", "peak_rss_gb"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
