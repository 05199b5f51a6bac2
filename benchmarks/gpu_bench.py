"""GPU timing of inversion + edit at 512x512 on full-size networks with random weights.

Random weights are enough for timing. `--arch lcm` (default): LCM-Dreamshaper-sized, the UNet
has SD-1.5's shape with LCM's w-embedding (time_cond_proj_dim 256), the VAE and a 12-layer CLIP
text encoder have SD's sizes. `--arch sdxl-turbo`: SDXL-Turbo-sized, its published UNet (2.6 B
parameters: 70 transformer blocks, cross-attention width 2048, pooled-text and size embeddings),
both text encoders (CLIP ViT-L, 12 layers; OpenCLIP ViT-bigG, 32 layers with its projection) and
SDXL's VAE, sampled with Euler ancestral (4 steps; RNRI at its official strength 0.6 inverts the
last 2). Reports one UNet call (batch 1 and 2), then for the inversion and each edit configuration
the median wall time, NFE, and where the time went (text encoders, VAE encode, UNet, VAE decode,
the rest: one more, instrumented run), the overhead against the UNet calls alone and peak memory
(resident, and on CUDA the allocator's). Runs on CPU too: the full-size proxy of the README.

GPU targets (fp16, one image, 512 px; `TARGETS`, checked on CUDA and reported as `targets`):
  lcm:        inversion <= 0.3 s, inversion + edit <= 1 s (an H100)
  sdxl-turbo: RNRI inversion (4-step schedule) <= 0.4 s, inversion + edit <= 1 s (an H100; GNRI's
              paper reports 0.4 s on an A100)

    python benchmarks/gpu_bench.py --inverter rnri --edits p2p,p2p-localblend,masactrl-mask --steps 4 [--compile] [--json out.json]
    python benchmarks/gpu_bench.py --arch sdxl-turbo --inverter rnri --edits p2p,masactrl-mask --steps 4 --json out.json
    python benchmarks/gpu_bench.py --tiny --device cpu [--arch sdxl-turbo]   # smoke test of the script itself
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

from diffusers import AutoencoderKL, AutoencoderTiny, DDIMScheduler, EulerAncestralDiscreteScheduler, LCMScheduler, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

from editing import edit  # noqa: E402
from inversion.benchmark import profiled  # noqa: E402
from inversion.models.sdxl import SDXLModel  # noqa: E402
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


# SDXL-Turbo's published configs (tests/fixtures/hub/stabilityai--sdxl-turbo); TINY_SDXL: the widths the tests use
SDXL_UNET = dict(sample_size=64, block_out_channels=(320, 640, 1280), layers_per_block=2, transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, use_linear_projection=True)
SDXL_TEXT = (dict(hidden=768, intermediate=3072, heads=12, layers=12, act="quick_gelu"), dict(hidden=1280, intermediate=5120, heads=20, layers=32, act="gelu"))
SDXL_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2)
TINY_SDXL = {"unet": dict(block_out_channels=(32, 32, 64), attention_head_dim=(1, 1, 2), cross_attention_dim=64, addition_time_embed_dim=8, projection_class_embeddings_input_dim=80),
             "text": dict(hidden=32, intermediate=37, heads=4, layers=2), "vae": dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1)}
TURBO_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1, timestep_spacing="trailing")


def sdxl_turbo_sized(device: str, dtype: torch.dtype, tiny: bool = False) -> SDXLModel:
    """SDXL-Turbo's networks with random weights (tiny: the test fixtures' widths, SDXL's depths)."""
    torch.manual_seed(0)
    tok = build_clip_tokenizer()
    texts = []
    for i, spec in enumerate(SDXL_TEXT):
        spec = {**spec, **TINY_SDXL["text"]} if tiny else spec
        config = CLIPTextConfig(vocab_size=len(tok), hidden_size=spec["hidden"], intermediate_size=spec["intermediate"], num_attention_heads=spec["heads"],
                                num_hidden_layers=spec["layers"], hidden_act=spec["act"], projection_dim=spec["hidden"], max_position_embeddings=77,
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        texts.append((CLIPTextModel if i == 0 else CLIPTextModelWithProjection)(config))
    unet = UNet2DConditionModel(**{**SDXL_UNET, **(TINY_SDXL["unet"] if tiny else {})})
    vae_spec = TINY_SDXL["vae"] if tiny else SDXL_VAE
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, scaling_factor=0.13025, **vae_spec)
    taesdxl = AutoencoderTiny(**TAESD_CONFIG)  # madebyollin/taesdxl: TAESD's network, for SDXL's latents (live previews)
    for m in (*texts, unet, vae, taesdxl):
        m.to(device=device, dtype=dtype).eval().requires_grad_(False)
    fields = {**schedule_fields(EulerAncestralDiscreteScheduler(**TURBO_SCHEDULER)), "final_alpha": 1.0}
    return SDXLModel(
        name="sdxl-turbo-sized", family="sdxl-turbo", sampler_kind="euler_a", **fields, device=torch.device(device), dtype=dtype, latent_channels=4, default_steps=4,
        default_guidance=1.0, default_edit_guidance=1.0, image_size=512, size_multiple=64, latent_scale=8,
        unet_module=unet, text_encoder=texts[0], tokenizer=tok, text_encoder_2=texts[1], tokenizer_2=tok, vae=vae, scaling_factor=0.13025, preview_vae=taesdxl,
    )


TARGETS = {"lcm": {"inversion": 0.3, "inversion + edit": 1.0}, "sdxl-turbo": {"inversion": 0.4, "inversion + edit": 1.0}}  # seconds on an H100, fp16


def targets_met(arch: str, rows: list[dict]) -> dict:
    """Each target against the measured medians: the inversion, and the inversion plus each edit."""
    inversion = rows[0]["seconds"]
    out = {"inversion": {"target_s": TARGETS[arch]["inversion"], "seconds": inversion, "met": inversion <= TARGETS[arch]["inversion"]}}
    for r in rows[1:]:
        total = inversion + r["seconds"]
        out[f"inversion + {r['what']}"] = {"target_s": TARGETS[arch]["inversion + edit"], "seconds": total, "met": total <= TARGETS[arch]["inversion + edit"]}
    return out


TAESD_CONFIG = dict(act_fn="relu", encoder_block_out_channels=(64,) * 4, decoder_block_out_channels=(64,) * 4, num_encoder_blocks=(1, 3, 3, 3),
                    num_decoder_blocks=(3, 3, 3, 1), latent_magnitude=3, latent_shift=0.5, scaling_factor=1.0, upsampling_scaling_factor=2)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


START = time.perf_counter()


def say(what: str) -> None:
    """Progress on stderr: at full size on a CPU each phase takes minutes."""
    print(f"[{time.perf_counter() - START:7.1f} s] {what}", file=sys.stderr, flush=True)


def timed(fn, device: str, repeats: int, what: str = ""):
    if what:
        say(f"{what}: a warm-up and {repeats} timed runs")
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


def through_engine(model, x, prompt: str, target: str, a, rows: list[dict]) -> dict:
    """A fresh inversion + the first edit as the app serves it (the upload read, the cache looked up, the
    editor, the two PNG files the page shows first), against the library's inversion + edit timed in turn with
    it on the same thread (`rows`' main-thread sum reported beside)."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from demo.engine import EditRequest, Engine, InversionRequest
    from demo.glue import output_folder, png
    from inversion.images import to_pil

    engine = Engine()
    engine.models.add("proxy", model)
    upload = Path(tempfile.mkdtemp()) / "input.png"
    to_pil(x).save(upload)
    editor, params = CONFIGS[a.edits.split(",")[0]]
    runs = iter(range(10**6))

    def once():
        req = EditRequest(InversionRequest(str(upload), prompt, a.inverter, a.steps, model="proxy"), target, editor, params=params)
        r = engine.edit(f"bench-{next(runs)}", req)  # a new session each run: a fresh inversion
        folder = output_folder()
        png(r["x"], "input.png", folder=folder), png(r["edit"], "edit-view.png", folder=folder)

    def library_once():
        edit(model, invert(model, x, prompt, a.inverter, a.steps), target, editor, **params)

    def clock(fn) -> float:
        sync(a.device)
        start = time.perf_counter()
        fn()
        sync(a.device)
        return time.perf_counter() - start

    # the same work through the library, on the engine's own thread and in turn with the engine: one thread's
    # OpenMP team for both, and the host's drift shared by both
    say(f"a fresh inversion + edit, the library and the engine in turn on the engine's thread: a warm-up each and {a.repeats} timed pairs")
    engine.worker.run(library_once)
    once()
    pairs = [(clock(lambda: engine.worker.run(library_once)), clock(once)) for _ in range(a.repeats)]
    library, seconds = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    return {"seconds": seconds, "library_seconds": library, "ratio": seconds / library, "pairs": pairs,
            "library_seconds_main_thread": rows[0]["seconds"] + rows[1]["seconds"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--arch", default="lcm", choices=tuple(TARGETS), help="lcm: LCM-Dreamshaper-sized; sdxl-turbo: SDXL-Turbo-sized (both text encoders, SDXL's VAE)")
    ap.add_argument("--dtype", default=None, help="float16 (default on CUDA) or float32")
    ap.add_argument("--inverter", default="rnri")
    ap.add_argument("--edits", default="p2p", help=f"comma-separated, of: {', '.join(CONFIGS)}")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet (inversion path)")
    ap.add_argument("--tiny", action="store_true", help="tiny random model instead (smoke test)")
    ap.add_argument("--engine", action="store_true", help="also time a fresh inversion + the first edit through the app's engine, to the two images the page shows first")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    dtype = getattr(torch, a.dtype) if a.dtype else (torch.float16 if a.device.startswith("cuda") else torch.float32)
    say(f"building the {a.arch}-sized model")
    if a.arch == "sdxl-turbo":
        model = sdxl_turbo_sized(a.device, dtype, tiny=a.tiny)
    else:
        model = tiny_sd(lcm=True, device=a.device) if a.tiny else lcm_sized(a.device, dtype)
    if a.compile:
        model.unet_module = torch.compile(model.unet_module, mode="max-autotune-no-cudagraphs", fullgraph=False)
    size = 64 if a.tiny else a.size
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(a.device) * 2 - 1
    prompt, target = "a photo of a cat sitting on a sofa", "a photo of a dog sitting on a sofa"
    report = {"arch": a.arch, "device": torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device, "dtype": str(dtype), "compile": a.compile,
              "size": size, "steps": a.steps, "inverter": a.inverter, "threads": torch.get_num_threads()}
    for batch in (1, 2):
        cond = model.encode_prompt([prompt] * batch)
        z = torch.randn(batch, 4, size // 8, size // 8, device=a.device)
        report[f"unet_call_b{batch}_s"], _ = timed(lambda z=z, cond=cond: model.predict_noise(z, 500, cond), a.device, a.repeats, f"one UNet call, batch {batch}")
    z = torch.randn(1, 4, size // 8, size // 8, device=a.device)
    report["decode_full_s"], _ = timed(lambda: model.decode(z), a.device, a.repeats, "one VAE decode")  # one image: the final edit and the metrics
    report["decode_preview_s"], _ = timed(lambda: model.preview(z), a.device, a.repeats, "one preview decode")  # TAESD: live mode's preview
    inv_s, inv = timed(lambda: invert(model, x, prompt, a.inverter, a.steps), a.device, a.repeats, f"{a.inverter} inversion")
    say("the inversion once more, instrumented")
    with profiled(model) as prof:  # one more run, instrumented: where the time goes
        inv = invert(model, x, prompt, a.inverter, a.steps)
    rows = [breakdown_row(f"{a.inverter} inversion", inv_s, inv.nfe, prof)]
    for name in a.edits.split(","):
        editor, params = CONFIGS[name]
        edit_s, out = timed(lambda editor=editor, params=params: edit(model, inv, target, editor, **params), a.device, a.repeats, f"{name} edit")
        say(f"{name} edit once more, instrumented")
        with profiled(model) as prof:
            out = edit(model, inv, target, editor, **params)
        rows.append(breakdown_row(f"{name} edit", edit_s, out.nfe, prof))
    if a.engine:
        report["engine"] = through_engine(model, x, prompt, target, a, rows)
    if a.device.startswith("cuda"):
        report["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        report["targets"] = targets_met(a.arch, rows)  # only a GPU run is held to them
    report["rows"] = rows
    for k, v in report.items():
        if k not in ("rows", "targets"):
            print(f"{k:18s} {v:.4f}" if isinstance(v, float) else f"{k:18s} {v}")
    cols = ["what", "seconds", "nfe", "text_s", "vae_encode_s", "unet_s", "vae_decode_s", "rest_s", "rest_fraction", "overhead", "peak_rss_gb"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    if "engine" in report:
        e = report["engine"]
        print(f"through the engine: {e['seconds']:.3f} s against the library's {e['library_seconds']:.3f} s: x{e['ratio']:.3f}")
    for what, t in report.get("targets", {}).items():
        print(f"target {what}: {t['seconds']:.3f} s <= {t['target_s']} s: {'met' if t['met'] else 'NOT met'}")
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
