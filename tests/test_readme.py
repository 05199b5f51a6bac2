"""Every command and code block the README shows runs as shown: the command-line block (each command
through its own `main`, in a folder where `assets/` is the project's, so the paths are the README's),
the Python API block, and the gradio_client block against the app on the offline default model."""

import json
import re
import shlex

import pytest
from conftest import ROOT

README = (ROOT / "README.md").read_text()


def _block(after: str, language: str) -> str:
    """The first fenced block of `language` after the heading `after`."""
    start = README.index(after)
    match = re.search(rf"```{language}\n(.*?)```", README[start:], re.S)
    assert match, (after, language)
    return match.group(1)


def _commands(block: str) -> list[list[str]]:
    """Shell lines joined at their backslashes, split at ';', comments dropped; 'a | b' alternatives
    ('python -m inversion models | inverters') expanded."""
    text = block.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.split("  #")[0].strip()
        for part in filter(None, (p.strip() for p in line.split(";"))):
            words = shlex.split(part)
            if "|" in words:
                head = words[: words.index("|") - 1]
                out += [head + [words[words.index("|") - 1]], head + [w for w in words[words.index("|") + 1 :]]]
            else:
                out.append(words)
    return out


@pytest.fixture()
def in_a_user_folder(tmp_path, monkeypatch):
    (tmp_path / "assets").symlink_to(ROOT / "assets", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_command_line_of_the_readme_runs(in_a_user_folder, capsys):
    from editing.cli import main as editing_main
    from inversion.cli import main as inversion_main

    commands = _commands(_block("## Command line", "bash"))
    assert len(commands) >= 6
    ran = []
    for words in commands:
        assert words[:2] == ["python", "-m"], words
        if "DIR" in words:  # the README's placeholder for the reader's folder: one of the examples in it
            folder = in_a_user_folder / "DIR"
            folder.mkdir(exist_ok=True)
            (folder / "scene0.png").write_bytes((ROOT / "assets" / "shapes" / "examples" / "scene0.png").read_bytes())
        main = {"inversion": inversion_main, "editing": editing_main}[words[2]]
        assert main(words[3:] + (["--quiet"] if "--json" in words else [])) == 0, (words, capsys.readouterr().err[-500:])
        ran.append(words[3])
        for i, w in enumerate(words[:-1]):
            if w in ("--out", "--gif"):
                assert (in_a_user_folder / words[i + 1]).stat().st_size > 0, words
    assert {"invert", "bench", "edit", "interpolate", "seeds"} <= set(ran)


def test_the_python_api_block_runs(in_a_user_folder):
    code = _block("## Python API", "python")
    exec(compile(code, "README.md (Python API)", "exec"), {})
    for name in ("inv.safetensors", "strip.png", "anim.gif", "more.png"):
        assert (in_a_user_folder / name).stat().st_size > 0, name


def test_the_gradio_client_block_edits(in_a_user_folder, shapes_app):
    """The README's client example against the app: every call answers, and the edit changes the image."""
    code = _block("## The app's API", "python")
    scope: dict = {}
    exec(compile(code.replace("http://127.0.0.1:7860/", shapes_app[1] + "/"), "README.md (app API)", "exec"), scope)
    assert scope["metrics"]["inversion"]["nfe"] > 0 or scope["metrics"]["inversion"]["cached"]
    edit_metrics = next(v for k, v in scope.items() if isinstance(v, dict) and "edit" in v)
    assert edit_metrics["edit"]["change_psnr"] < 30  # an edit that changes the image, not the input back
    assert len(scope["frames"]) == 8 and scope["rows"]


def test_the_live_table_is_the_recorded_run():
    """Every row of the README's live table is a row of assets/live_bench.json, the run it says it is (a number on the
    page is a claim: after a new run both change together)."""
    record = json.loads((ROOT / "assets" / "live_bench.json").read_text())["rows"]
    table = README[README.index("### Live: `shapes-lcm` on 2 cores"):]
    table = table[table.index("| path | what | median s"):]
    shown = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.split("\n\n")[0].splitlines()[2:]]
    assert len(shown) == len(record)
    for cells, row in zip(shown, record):
        assert cells[:5] == [row["path"], row["what"], f"{row['median_s']:.3f}", f"{row['min_s']:.3f}", f"{row['max_s']:.3f}"], cells
