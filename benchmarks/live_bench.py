"""How live the offline demo is: an inversion (RNRI, the app's default on `shapes-lcm`, and DDIM)
plus a P2P edit on `shapes-lcm` at 4 steps.

    python benchmarks/live_bench.py [--model shapes-lcm] [--inverters rnri,ddim] [--repeats 7] [--browser] [--json out.json]

Timed four ways, each the median of --repeats runs after a warm-up:
- library: invert + edit end to end (a fresh inversion each run), then a second edit of
  the same inversion (what the app's cache gives); with the overhead against the UNet
  calls alone (inversion.benchmark);
- API: the same through the app's /edit endpoint with gradio_client on loopback (app.py in its own process,
  queue, image transfer, the reconstruction and metrics the app adds); a new client per
  run is a new session, so its first edit inverts and its second reuses (as the README's example makes the
  client, and for the first inverter also with gradio_client's default ssl_verify);
- plain HTTP: the same /edit call made with httpx (upload, call, a blocking read of the event stream);
- browser (--browser): clicks on Edit to the edited image loaded and decoded, timed on the page's own clock, in Debian chromium (a new image each round),
  each round against the library doing the same work a second before it (paired: the margin to the target per round).
The library is timed again after the requests: on a shared host the machine's speed drifts over minutes.
A benchmark, not a test: it prints a Markdown table and JSON, and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from editing import edit  # noqa: E402
from inversion import invert, load_model  # noqa: E402
from inversion.benchmark import profiled, warm_up  # noqa: E402
from inversion.images import load_image  # noqa: E402
from inversion.models import base_stage  # noqa: E402

SCENE = ROOT / "assets" / "shapes" / "examples" / "scene0.png"
SOURCE, TARGET, TARGET2 = "a red circle on a blue background", "a green circle on a blue background", "a yellow circle on a blue background"


def median_of(repeats: int, fn):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times), out


def row_name(kind: str, inverter: str) -> str:
    """The row's name for a fresh or a cached edit (the same row names for the library and every path)."""
    return f"{inverter} inversion + P2P edit" if kind == "fresh" else f"second edit ({inverter}, cached inversion)"


def library(model, x, steps: int, repeats: int, inverter: str, path: str = "library") -> list[dict]:
    warm_up(model, x, SOURCE)

    def both():
        inv = invert(model, x, SOURCE, inverter, steps)
        return inv, edit(model, inv, TARGET, "p2p")

    med, lo, hi, (inv, out) = median_of(repeats, both)
    with profiled(model) as prof:
        both()
    rows = [{"path": path, "what": row_name("fresh", inverter), "median_s": med, "min_s": lo, "max_s": hi, "nfe": inv.nfe + out.nfe, **prof.fields(med, inv.nfe + out.nfe)}]
    med, lo, hi, out = median_of(repeats, lambda: edit(model, inv, TARGET2, "p2p"))
    with profiled(model) as prof:
        edit(model, inv, TARGET2, "p2p")
    rows.append({"path": path, "what": row_name("cached", inverter), "median_s": med, "min_s": lo, "max_s": hi, "nfe": out.nfe, **prof.fields(med, out.nfe)})
    return rows


def _request_rows(path: str, inverter: str, times: dict, server: dict) -> list[dict]:
    """Medians over the rounds after the first (which warms the server up), with the server's own breakdown."""
    rows = []
    for kind in ("fresh", "cached"):
        for part, label in (("edit", "the edited image"), ("all", "every metric")):
            t = times[(kind, part)][1:]
            rows.append({"path": path, "what": f"{row_name(kind, inverter)}: to {label}", "median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)})
        # where a whole request's time went: the server's own parts, and the rest (queue, gradio, transport)
        parts = {k: statistics.median(p[k] for p in server[kind][1:]) for k in ("work_s", "encode_s", "measure_s")}
        parts["queue_transport_s"] = statistics.median(times[(kind, "all")][1:]) - sum(parts.values())
        rows[-1]["breakdown"] = {k: round(v, 4) for k, v in parts.items()}
    return rows


def _empty():
    return {(k, part): [] for k in ("fresh", "cached") for part in ("edit", "all")}, {k: [] for k in ("fresh", "cached")}


def api(url: str, steps: int, repeats: int, inverter: str, default_ssl: bool = False) -> list[dict]:
    """/edit through gradio_client: the time to its first output (the edited image, as soon as it is
    made) and to its last (with the reconstruction and every metric). As the README's example makes it, with
    ssl_verify only on https (each of the client's HTTP calls makes an httpx client, which loads the CA bundle
    when verifying: 4-6 calls before the first output, 24 ms each here), or with its default (`default_ssl`)."""
    from gradio_client import Client, handle_file

    times, server = _empty()
    for _ in range(repeats + 1):  # the first round warms the server up
        client = Client(url, verbose=False, ssl_verify=default_ssl or url.startswith("https://"))
        for target, kind in ((TARGET, "fresh"), (TARGET2, "cached")):
            start = time.perf_counter()
            job = client.submit(image=handle_file(str(SCENE)), source_prompt=SOURCE, target_prompt=target, inverter=inverter, editor="p2p", steps=steps, api_name="/edit")
            while not job.outputs() and not job.done():
                time.sleep(0.005)
            times[(kind, "edit")].append(time.perf_counter() - start)
            *_, metrics = job.result()
            times[(kind, "all")].append(time.perf_counter() - start)
            server[kind].append(metrics["server"])
    return _request_rows("API (gradio_client, its default ssl_verify)" if default_ssl else "API (gradio_client)", inverter, times, server)


def http_api(url: str, steps: int, repeats: int, inverter: str) -> list[dict]:
    """/edit over plain HTTP, as any client may call it: upload the image, post the call, then a blocking read
    of its event stream on one connection (gradio_client makes an HTTP client per call and reads its event queue
    every 50 ms). To the edited image downloaded, and to the last output."""
    import uuid

    import httpx

    times, server = _empty()
    with httpx.Client(timeout=300) as http:
        for _ in range(repeats + 1):  # the first round warms the server up
            session = uuid.uuid4().hex  # a new session: its first edit inverts, its second reuses
            for target, kind in ((TARGET, "fresh"), (TARGET2, "cached")):
                start = time.perf_counter()
                with SCENE.open("rb") as f:
                    path = http.post(f"{url}/gradio_api/upload", files={"files": (SCENE.name, f, "image/png")}).json()[0]
                image = {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": SCENE.name}
                data = [image, SOURCE, target, inverter, "p2p", steps, 0, None, None, "{}", "{}", "", None]
                event_id = http.post(f"{url}/gradio_api/call/edit", json={"data": data, "session_hash": session}).json()["event_id"]
                first = metrics = None
                with http.stream("GET", f"{url}/gradio_api/call/edit/{event_id}") as stream:
                    event = None
                    for line in stream.iter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:") and event == "error":
                            raise RuntimeError(f"/edit failed: {line[5:].strip()}")
                        elif line.startswith("data:") and event in ("generating", "complete"):
                            out = json.loads(line[5:])
                            if first is None:
                                http.get(out[0]["url"]).raise_for_status()  # the edited image, as a page would fetch it
                                first = time.perf_counter() - start
                            if event == "complete":
                                metrics = out[2]
                                break
                times[(kind, "edit")].append(first)
                times[(kind, "all")].append(time.perf_counter() - start)
                server[kind].append(metrics["server"])
    return _request_rows("API (plain HTTP)", inverter, times, server)


# Timed inside the page, on its own clock: the click, then the edited image (a new src) loaded and decoded. A
# Playwright wait would poll the page every frame from outside, and on 2 cores that polling takes CPU from the server.
CLICK_TO_IMAGE = """before => new Promise(done => {
  const t0 = performance.now();
  const finish = img => img.decode().catch(() => null).then(() => done((performance.now() - t0) / 1000));
  const watch = new MutationObserver(() => {
    const img = document.querySelector('#edited img');
    if (!img || img.src === before) return;
    watch.disconnect();
    if (img.complete) finish(img); else img.addEventListener('load', () => finish(img), {once: true});
  });
  watch.observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
  document.querySelector('#edit-btn').click();
})"""


def browser(url: str, repeats: int, model, steps: int) -> list[dict]:
    """Clicks on Edit in Debian chromium, each timed to the edited image shown. Each round uploads a new image
    (the scene shifted by a few pixels: a fresh inversion, never the on-load example's cached one), clicks Edit,
    then edits it again (the cached inversion); the page's own summary must say which it was ("reused" or
    not), so a click is never timed on a result that was not its own. In each round, just before the clicks, the
    library does the same work on the same image (the page's default inverter, P2P, then the second target), so
    each click is set against the library timed a second earlier: the host's speed drifts over minutes."""
    import shutil
    import tempfile

    import numpy as np
    from PIL import Image
    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    scene = np.asarray(Image.open(SCENE).convert("RGB"))
    times = {"fresh": [], "cached": []}
    lib = {"fresh": [], "cached": []}
    inverter = base_stage(model).default_inverter

    def library_round(path: Path) -> None:
        x = model.prepare_image(load_image(path))
        start = time.perf_counter()
        inv = invert(model, x, SOURCE, inverter, steps)
        edit(model, inv, TARGET, "p2p")
        lib["fresh"].append(time.perf_counter() - start)
        start = time.perf_counter()
        edit(model, inv, TARGET2, "p2p")
        lib["cached"].append(time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=flags)
        page = b.new_page(viewport={"width": 1366, "height": 900})
        page.goto(url, wait_until="networkidle")
        page.locator("#slider img").nth(1).wait_for(timeout=120000)  # the page's first example, edited on load
        summary = page.locator("#summary")
        for i in range(repeats + 1):  # the first round warms up
            shifted = Path(tmp) / f"scene_{i}.png"
            Image.fromarray(np.roll(scene, 2 * (i + 1), axis=1)).save(shifted)
            page.locator("#input input[type=file]").set_input_files(str(shifted))
            page.locator(f"#input img[src$='/{shifted.name}']").first.wait_for(timeout=30000)  # this upload, not the image before
            page.wait_for_function("() => !document.querySelector('#edited img')", timeout=30000)  # the upload cleared the old edit
            page.locator("#source textarea").fill(SOURCE)
            page.wait_for_timeout(300)  # the upload's canvas decoded: the server idle
            library_round(shifted)
            for target, kind in ((TARGET, "fresh"), (TARGET2, "cached")):
                page.locator("#target textarea").fill(target)
                before = page.locator("#edited img").first.get_attribute("src") if page.locator("#edited img").count() else None
                said_before = summary.inner_text()
                page.wait_for_timeout(300)  # the page settles, as a person's next click would find it
                t = page.evaluate(CLICK_TO_IMAGE, before)
                page.wait_for_function("b => { const s = document.querySelector('#summary').innerText; return s !== b && s.includes(' calls'); }", arg=said_before, timeout=120000)
                reused = "reused" in summary.inner_text()
                if reused != (kind == "cached"):
                    raise RuntimeError(f"round {i}: the {kind} click's inversion was {'reused' if reused else 'fresh'}; not timing it")
                times[kind].append(t)
        b.close()
    rows = []
    for kind, what in (("fresh", "the app's default inverter, fresh inversion"), ("cached", "cached inversion")):
        t, base = times[kind][1:], lib[kind][1:]
        limits = [1.15 * b + 0.1 for b in base]  # the target, against the library timed in the same round
        rows.append({"path": "browser (chromium)", "what": f"click Edit to the edited image ({what})", "median_s": statistics.median(t),
                     "min_s": min(t), "max_s": max(t), "paired": {"library_s": base, "browser_s": t, "rounds_within_target": sum(a <= b for a, b in zip(t, limits)),
                                                                   "rounds": len(t), "median_margin_s": statistics.median(b - a for a, b in zip(t, limits))}})
        rows.append({"path": "library, in turn with the browser", "what": row_name(kind, inverter),
                     "median_s": statistics.median(base), "min_s": min(base), "max_s": max(base)})
    return rows


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes-lcm")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2, help="the library's torch threads")
    ap.add_argument("--server-threads", type=int, default=None, help="app.py's model-thread torch threads (default: its own choice, every core)")
    ap.add_argument("--inverters", default="rnri,ddim")
    ap.add_argument("--browser", action="store_true")
    ap.add_argument("--no-api", action="store_true")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = load_model(a.model)
    steps = a.steps or model.stages[0].default_steps
    x = model.prepare_image(load_image(SCENE))
    inverters = a.inverters.split(",")
    rows = [r for name in inverters for r in library(model, x, steps, a.repeats, name)]
    if not a.no_api or a.browser:
        from load import Server  # app.py in a process of its own, as people run it (in this process the
        # client's threads would take the GIL from the server's and slow its model work by half)

        server = Server(a.model, file_age=600, threads=a.server_threads)
        try:
            if not a.no_api:
                rows += [r for name in inverters for r in http_api(server.url, steps, a.repeats, name)]
                rows += [r for name in inverters for r in api(server.url, steps, a.repeats, name)]
                rows += api(server.url, steps, a.repeats, inverters[0], default_ssl=True)
            if a.browser:
                rows += browser(server.url, a.repeats, model, steps)
        finally:
            server.stop()
        # the machine's speed drifts over minutes (a shared host): the library again, after the requests, so each
        # path can be read against the library measured before and after it
        rows += [r for name in inverters for r in library(model, x, steps, a.repeats, name, path="library, again after the requests")]
    machine = f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), torch {torch.__version__}, {a.threads} threads"
    print(f"{a.model}, {steps} steps per stage; {machine}; median of {a.repeats} runs\n")
    print("| path | what | median s | min s | max s | NFE | UNet-only s | overhead |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        extra = f"{r['nfe']} | {r['unet_seconds']:.3f} | {r['overhead']:.2f}" if "nfe" in r else " | | "
        print(f"| {r['path']} | {r['what']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['max_s']:.3f} | {extra} |")
    for r in rows:
        if "paired" in r:
            p = r["paired"]
            print(f"\n{r['what']}, each round against the library timed just before it: within 1.15 x the library + 0.1 s in "
                  f"{p['rounds_within_target']} of {p['rounds']} rounds; median margin {p['median_margin_s']:+.3f} s")
    for r in rows:
        if "breakdown" in r:
            print(f"\n{r['what']}, where the whole request's time went: " + ", ".join(f"{k[:-2]} {v:.3f} s" for k, v in r["breakdown"].items()))
    if a.json:
        a.json.write_text(json.dumps({"model": a.model, "steps": steps, "machine": machine, "repeats": a.repeats, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
