"""The benchmark scripts run (their numbers are measured elsewhere, never asserted on time)."""

import csv
import json
import subprocess
import sys

from conftest import ROOT
from PIL import Image


def test_folder_evaluation_writes_rows_and_a_summary(tmp_path, cat_image):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import eval_folder

    d = tmp_path / "images"
    d.mkdir()
    for name in ("a.png", "b.png"):
        Image.open(cat_image).save(d / name)
    (d / "b.txt").write_text("a cat on a sofa\na dog on a sofa\n")
    (d / "broken.png").write_bytes(b"not an image")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"a.png": {"source": "a cat", "target": "a dog"}}))
    out = tmp_path / "r.csv"
    result = eval_folder.main(["--model", "tiny-sd", "--images", str(d), "--inverters", "ddim,rnri", "--editor", "p2p",
                               "--steps", "3", "--prompts", str(prompts), "--out", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and {r["image"] for r in rows} == {"a.png", "b.png", "broken.png"}
    assert all(r["error"] for r in rows if r["image"] == "broken.png")
    good = [r for r in rows if r["image"] != "broken.png"]
    for r in good:
        for k in ("psnr", "edit_psnr"):
            assert 0 < float(r[k]) <= 100, (k, r[k])  # finite, in range (capped at 100)
        assert -1 <= float(r["ssim"]) <= 1 and int(r["nfe"]) > 0
    assert [s["inverter"] for s in result] == ["ddim", "rnri"] and all(s["images"] == 2 and s["errors"] == 1 for s in result)


def test_gpu_benchmark_script_smoke_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--tiny", "--device", "cpu", "--repeats", "1", "--json", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    inversion, p2p = r["rows"]
    assert inversion["nfe"] == 12 and p2p["nfe"] == 4 and inversion["overhead"] > 0
    assert inversion["vae_decode_s"] == 0 < inversion["vae_encode_s"] and p2p["vae_encode_s"] == 0 < p2p["vae_decode_s"]


def test_gpu_benchmark_script_runs_the_sdxl_turbo_proxy_at_tiny_widths(tmp_path):
    """The SDXL-Turbo-sized proxy (both text encoders, SDXL's VAE, Euler ancestral) at the test widths:
    RNRI at its official strength inverts 2 of 4 steps (2 iterations + 1 noise correction each)."""
    out = tmp_path / "sdxl.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--tiny", "--device", "cpu", "--arch", "sdxl-turbo", "--repeats", "1",
                        "--edits", "p2p,masactrl-mask", "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    inversion, p2p, masactrl = r["rows"]
    assert r["arch"] == "sdxl-turbo" and inversion["nfe"] == 6 and p2p["nfe"] == masactrl["nfe"] == 2
    assert inversion["text_s"] > 0 and inversion["vae_encode_s"] > 0 and p2p["vae_decode_s"] > 0 and inversion["peak_rss_gb"] > 0
    assert "targets" not in r  # held to the GPU targets on CUDA only


def test_gpu_targets_are_checked_against_the_inversion_and_each_edit():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_bench import TARGETS, targets_met

    rows = [{"what": "rnri inversion", "seconds": 0.35}, {"what": "p2p edit", "seconds": 0.7}]
    t = targets_met("sdxl-turbo", rows)
    assert TARGETS["sdxl-turbo"] == {"inversion": 0.4, "inversion + edit": 1.0}
    assert t["inversion"]["met"] and not t["inversion + p2p edit"]["met"] and t["inversion + p2p edit"]["seconds"] == 0.35 + 0.7
    assert targets_met("lcm", rows)["inversion"]["met"] is False  # LCM's inversion target is 0.3 s


def test_profiled_splits_an_operation_into_its_components_and_restores_the_model(tiny_sd, cat_image):
    from editing import edit
    from inversion.benchmark import PARTS, profiled
    from inversion.pipeline import invert

    with profiled(tiny_sd) as prof:
        inv = invert(tiny_sd, cat_image, "a cat", "rnri", steps=3)
    b = prof.breakdown()
    assert b["text_s"] > 0 and b["vae_encode_s"] > 0 and b["unet_s"] > 0 and b["vae_decode_s"] == 0
    assert 0 <= b["rest_s"] < prof.wall and len(prof.calls) == inv.nfe and b["peak_rss_gb"] > 0
    assert not set(PARTS.values()) & set(vars(tiny_sd))  # the stage's own methods are back
    with profiled(tiny_sd) as prof:
        out = edit(tiny_sd, inv, "a dog", "p2p")
    b = prof.fields(out.seconds, out.nfe)
    assert b["vae_encode_s"] == 0 < b["vae_decode_s"] and b["unet_s"] > 0 and b["overhead"] > 0
