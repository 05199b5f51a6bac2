"""Every flag of the two main commands shows its effect: changing it changes the result or the JSON
field that echoes it (the JSON echoes every steps, seed, guidance and inverter actually used), and the
numbers the JSON reports are recomputed from the images written beside them."""

import json

import numpy as np
import pytest
from PIL import Image

from editing.cli import main as edit_main
from inversion.cli import main as invert_main
from inversion.metrics import psnr, ssim
from inversion.models import load_model
from inversion.noise_stats import noise_fields
from inversion.pipeline import input_tensor
from inversion.result import load_inversion


def _run(main, argv, capsys) -> dict:
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _tensor(path):
    a = np.asarray(Image.open(path).convert("RGB"), np.float32)
    import torch

    return torch.from_numpy(a).permute(2, 0, 1)[None] / 127.5 - 1


@pytest.fixture(scope="module")
def scene():
    from conftest import ROOT

    return str(ROOT / "assets" / "shapes" / "examples" / "scene1.png")


INVERT = ["invert", "--model", "tiny-lcm", "--inverter", "ddim", "--prompt", "a cat", "--steps", "2", "--json", "--quiet"]
INVERT_FLAGS = [  # (flag and value, the JSON fields that must change)
    (["--steps", "3"], {"steps", "nfe"}),
    (["--prompt", "a dog"], {"prompt"}),
    (["--guidance", "2.5"], {"guidance"}),
    (["--size", "96"], {"size"}),
    (["--param", "noise_correction=false"], {"params", "psnr"}),
    (["--inverter", "rnri"], {"inverter", "nfe"}),
    (["--negative-prompt", "blurry"], {"negative_prompt"}),
    (["--seed", "5"], {"seed"}),  # on LCM the default step noise is the model's own (predicted): nothing drawn
    (["--param", "step_noise=drawn"], {"params", "noise_std", "noise_ks"}),  # (the reconstructions are exact either way)
    (["--model", "tiny-sd"], {"model"}),
]


def test_every_invert_flag_changes_what_it_names(capsys, cat_image, scene, tmp_path):
    base = _run(invert_main, INVERT + ["--image", cat_image.as_posix()], capsys)
    for extra, fields in INVERT_FLAGS:
        got = _run(invert_main, INVERT + ["--image", cat_image.as_posix()] + extra, capsys)
        changed = {k for k in fields if got.get(k) != base.get(k)}
        assert changed == fields, (extra, {k: (base.get(k), got.get(k)) for k in fields})
    drawn = [_run(invert_main, INVERT + ["--image", cat_image.as_posix(), "--param", "step_noise=drawn", "--seed", seed], capsys) for seed in ("0", "5")]
    assert drawn[0]["noise_std"] != drawn[1]["noise_std"]  # with drawn step noise the seed draws it
    predicted = _run(invert_main, INVERT + ["--image", cat_image.as_posix(), "--seed", "5"], capsys)
    assert predicted["noise_std"] == base["noise_std"]  # without, nothing is drawn
    other = _run(invert_main, INVERT + ["--image", scene], capsys)
    assert other["image"] != base["image"] and other["psnr"] != base["psnr"]
    # --out, --save-inversion: the files exist, and the reported PSNR/SSIM are those of the written image
    out, saved = tmp_path / "recon.png", tmp_path / "inv.safetensors"
    r = _run(invert_main, INVERT + ["--image", cat_image.as_posix(), "--out", str(out), "--save-inversion", str(saved)], capsys)
    model = load_model("tiny-lcm")
    x = input_tensor(model, cat_image.as_posix())
    assert r["out"] == str(out) and r["inversion"] == str(saved) and saved.stat().st_size > 0
    assert noise_fields(load_inversion(saved), model.alphas_cumprod) == {k: r[k] for k in ("noise_std", "noise_kurtosis", "noise_ks", "noise_gaussian")}
    assert psnr(_tensor(out), x) == pytest.approx(min(r["psnr"], 100.0), abs=0.5 if r["psnr"] < 40 else 100)
    assert ssim(_tensor(out), x) == pytest.approx(r["ssim"], abs=0.01)
    # --quiet: no progress on stderr; without it, progress
    assert invert_main(INVERT[:-1] + ["--image", cat_image.as_posix()]) == 0
    assert capsys.readouterr().err  # (stderr is not a terminal: the progress line is printed at the end)


EDIT = ["edit", "--model", "tiny-sd", "--inverter", "ddim", "--editor", "p2p", "--source-prompt", "a cat sitting", "--target-prompt", "a dog sitting",
        "--steps", "2", "--json", "--quiet"]
EDIT_FLAGS = [
    (["--steps", "3"], {"steps", "nfe", "inversion_nfe", "edit_nfe"}),
    (["--inverter", "rnri"], {"inverter", "inversion_nfe"}),
    (["--editor", "masactrl"], {"editor", "params"}),
    (["--target-prompt", "a fox sitting"], {"target_prompt", "edit_psnr"}),
    (["--source-prompt", "a cat resting", "--target-prompt", "a dog resting"], {"source_prompt", "target_prompt", "psnr"}),
    (["--guidance", "3"], {"edit_guidance", "edit_psnr"}),
    (["--inversion-guidance", "2"], {"inversion_guidance", "psnr"}),
    (["--param", "cross_replace=0.3"], {"params", "edit_psnr"}),
    (["--inverter-param", "iterations=3"], {"inverter_params"}),
    (["--negative-prompt", "blurry"], {"negative_prompt"}),
    (["--size", "96"], {"size"}),
    (["--seed", "3"], {"seed"}),
]


def test_every_edit_flag_changes_what_it_names(capsys, cat_image, tmp_path):
    image = ["--image", cat_image.as_posix()]
    base = _run(edit_main, EDIT + image, capsys)
    for extra, fields in EDIT_FLAGS:
        argv = EDIT + image + extra
        if extra[0] == "--inverter-param":
            argv = [a if a != "ddim" else "rnri" for a in argv]  # a parameter ddim does not have
            base_here = _run(edit_main, [a if a != "ddim" else "rnri" for a in EDIT + image], capsys)
        else:
            base_here = base
        got = _run(edit_main, argv, capsys)
        changed = {k for k in fields if got.get(k) != base_here.get(k)}
        assert changed == fields, (extra, {k: (base_here.get(k), got.get(k)) for k in fields})
    # --out: the edit_psnr / edit_ssim the JSON reports are the written edit's
    out = tmp_path / "edit.png"
    r = _run(edit_main, EDIT + image + ["--out", str(out)], capsys)
    x = input_tensor(load_model("tiny-sd"), cat_image.as_posix())
    assert psnr(_tensor(out), x) == pytest.approx(r["edit_psnr"], abs=0.5)
    assert ssim(_tensor(out), x) == pytest.approx(r["edit_ssim"], abs=0.01)
    assert r["nfe"] == r["inversion_nfe"] + r["edit_nfe"] and r["seconds"] >= r["edit_seconds"] >= 0
