"""The command-line contract (docs/ARCHITECTURE.md): last line is JSON; user errors exit 2."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT
from PIL import Image

from inversion.cli import main
from inversion.inverters import INVERTERS

CONTRACT = {"model", "inverter", "steps", "nfe", "seconds", "psnr", "ssim", "latent_psnr"}


def _last_json(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_invert_prints_the_json_contract_as_a_subprocess(cat_image, tmp_path):
    out = tmp_path / "recon.png"
    p = subprocess.run(
        [sys.executable, "-m", "inversion", "invert", "--model", "tiny-sd", "--inverter", "ddim", "--image", str(cat_image),
         "--prompt", "a cat", "--steps", "5", "--out", str(out), "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout.strip().splitlines()[-1])
    assert CONTRACT <= set(report)
    assert report["model"] == "tiny-sd" and report["inverter"] == "ddim" and report["steps"] == 5 and report["nfe"] == 5
    assert Image.open(out).size == (64, 48)


def test_bench_prints_one_row_per_inverter(capsys):
    assert main(["bench", "--model", "oracle", "--steps", "5", "--samples", "2", "--json", "--quiet"]) == 0
    rows = _last_json(capsys)
    assert [r["inverter"] for r in rows] == list(INVERTERS)
    for r in rows:
        if INVERTERS[r["inverter"]].needs_cascade:
            assert "cascade" in r["skipped"]
            continue
        assert CONTRACT | {"vae_psnr", "time_per_nfe", "overhead"} <= set(r)
        assert r["images"] == 2 and isinstance(r["nfe"], int) and r["overhead"] > 0


def test_bench_over_an_image_folder(capsys, tmp_path, cat_image):
    for i in range(2):
        Image.open(cat_image).save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    assert main(["bench", "--model", "tiny-sd", "--inverters", "ddim", "--images", str(tmp_path), "--steps", "3", "--json", "--quiet"]) == 0
    assert _last_json(capsys)[0]["images"] == 2


def test_user_errors_exit_2_with_a_message(capsys, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    cases = [
        ["invert", "--model", "nope", "--image", str(bad)],
        ["invert", "--model", "tiny-sd", "--image", str(bad), "--json"],
        ["invert", "--model", "tiny-sd", "--inverter", "nope", "--image", str(bad)],
        ["invert", "--model", "tiny-sd"],
        ["bench", "--model", "tiny-sd", "--images", str(tmp_path / "none")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: "), err


def test_hub_model_fails_with_a_remedy_offline(capsys, cat_image):
    assert main(["invert", "--model", "sd-1.5", "--image", str(cat_image), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "stable-diffusion-v1-5" in err and "offline" in err.lower()


def test_edit_cli_splits_timings_and_nfe(capsys, cat_image, tmp_path):
    from editing.cli import main as edit_main

    out = tmp_path / "edit.png"
    argv = ["edit", "--model", "tiny-sd", "--inverter", "rnri", "--editor", "masactrl", "--image", str(cat_image),
            "--source-prompt", "a cat", "--target-prompt", "a dog", "--steps", "4", "--out", str(out),
            "--save-inversion", str(tmp_path / "inv.safetensors"), "--json", "--quiet"]
    assert edit_main(argv) == 0
    r = _last_json(capsys)
    assert {"model", "inverter", "editor", "steps", "nfe", "inversion_nfe", "edit_nfe", "inversion_seconds", "edit_seconds", "psnr"} <= set(r)
    assert r["nfe"] == r["inversion_nfe"] + r["edit_nfe"] and r["edit_nfe"] == 4 and r["inversion_nfe"] == 8
    assert Image.open(out).size == (64, 48)
    # reuse the saved inversion: no inversion NFE this time
    argv = ["edit", "--model", "tiny-sd", "--editor", "diffedit", "--inversion", str(tmp_path / "inv.safetensors"),
            "--image", str(cat_image), "--target-prompt", "a dog", "--json", "--quiet"]
    assert edit_main(argv) == 0
    r = _last_json(capsys)
    assert r["inverter"] == "rnri" and r["steps"] == 4 and r["inversion_reused"] and r["source_prompt"] == "a cat"
    assert r["inversion_nfe"] == 0 and r["inversion_seconds"] == 0 and r["nfe"] == r["edit_nfe"] > 0 and r["seconds"] == r["edit_seconds"]
    with_image = r
    # the re-edit command the app's page shows: no --image, the reference is the inversion's own input
    argv = ["edit", "--model", "tiny-sd", "--inversion", str(tmp_path / "inv.safetensors"), "--editor", "p2p", "--target-prompt", "a dog", "--json", "--quiet"]
    assert edit_main(argv) == 0
    r = _last_json(capsys)
    assert r["inversion_nfe"] == 0 and r["source_prompt"] == "a cat" and r["edit_nfe"] == 4
    assert r["psnr"] > with_image["psnr"]  # against the codec's own decode of the inverted latent, not the photo
    # a saved inversion of another model, or another source prompt, is refused in one line
    for extra, message in ((["--model", "tiny-lcm"], "was inverted with 'tiny-sd', not 'tiny-lcm'"), (["--source-prompt", "a bird"], "made with the source prompt 'a cat'")):
        args = argv[:1] + extra + [a for a in argv[1:] if a != "tiny-sd" and a != "--model"] if extra[0] == "--model" else argv + extra
        assert edit_main(args) == 2
        assert message in capsys.readouterr().err


def test_edit_cli_user_errors(capsys, cat_image):
    from editing.cli import main as edit_main

    base = ["edit", "--model", "tiny-sd", "--image", str(cat_image), "--source-prompt", "a cat", "--steps", "3"]
    for extra in (["--target-prompt", "a big dog", "--param", "mode=replace"], ["--target-prompt", "a dog", "--editor", "nope"],
                  ["--target-prompt", "a dog", "--param", "cross_replace=2"]):
        assert edit_main(base + extra) == 2
        assert capsys.readouterr().err.startswith("error: ")  # fails before any inversion (no progress line)


def test_editing_bench_reports_overhead_per_editor(capsys):
    from editing.cli import main as edit_main

    assert edit_main(["bench", "--model", "tiny-sd", "--inverter", "ddim", "--steps", "3", "--repeats", "2", "--json"]) == 0
    rows = _last_json(capsys)
    assert [r["editor"] for r in rows] == ["p2p", "masactrl", "diffedit"]
    for r in rows:
        assert r["nfe"] > 0 and r["unet_seconds"] > 0 and r["overhead"] > 0 and r["inversion_nfe"] == 3
    assert rows[0]["nfe"] == 3  # one run's count, not the repeats' sum
    with pytest.raises(SystemExit) as exit_:
        edit_main(["bench", "--model", "tiny-sd", "--repeats", "0"])
    assert exit_.value.code == 2
