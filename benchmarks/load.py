"""The app under load and abuse, on loopback only: bounded, and it stops by itself.

    python benchmarks/load.py [--model shapes-lcm] [--sessions 32] [--soak 1000] [--file-age 60] [--json out.json]

Starts `app.py` in a subprocess (its own temporary folders, files kept --file-age seconds), then:
- sessions: K clients at once, 3 edits each; errors, whether every result is bit-identical to the
  same requests made one at a time, whether a session's second and third edits reused its inversion;
- soak: N requests (inversions and edits of the example scenes, a new client every 20 requests),
  sampling the server's RSS and the files in its folders every 50; the first and the second half's
  growth per 100 requests (flat in the second half: nothing accumulates once the file age has passed);
- flood: one client submits 40 heavy requests, another one request; how long the other waits,
  against one heavy request alone;
- cancel: a long request cancelled after a second; how long until another client's request is done.
Prints a Markdown table and, with --json, writes the numbers. A benchmark, not a test: asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import free_port  # noqa: E402  (the tests' loopback helper)

SCENES = ROOT / "assets" / "shapes" / "examples"
PROMPTS = {"scene0.png": "a red circle on a blue background", "scene1.png": "a yellow square on a purple background",
           "scene2.png": "a white triangle on a green background", "scene3.png": "a orange star on a black background"}
TARGETS = ["green", "yellow", "white"]


class Server:
    """app.py on loopback in a subprocess, with folders of its own to count."""

    def __init__(self, model: str, file_age: float, threads: int | None, cache_mb: float | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="load-"))
        self.port = free_port()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(self.dir / "gradio"),
               "APP_OUTPUT_DIR": str(self.dir / "outputs"), "APP_FILE_AGE": str(file_age)}
        env.pop("OMP_NUM_THREADS", None)
        if cache_mb is not None:  # the inversion cache's bound (APP_CACHE_MB): a soak past it shows whether anything else grows
            env["APP_CACHE_MB"] = str(cache_mb)
        if threads:  # else the app's own choice (app.py: every core for its model thread)
            env["OMP_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", model, "--port", str(self.port)], cwd=ROOT, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        start = time.time()
        while time.time() - start < 120:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                self.listening_after = time.time() - start
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("the app did not start listening within 120 s")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def files(self) -> int:
        return sum(1 for p in self.dir.rglob("*") if p.is_file())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False)


def edit(c, scene: str, target: str, **kw):
    from gradio_client import handle_file

    source = PROMPTS[scene]
    return c.predict(image=handle_file(str(SCENES / scene)), source_prompt=source, target_prompt=source.replace(source.split()[1], target),
                     editor="p2p", api_name="/edit", **kw)


def sessions(url: str, k: int) -> dict:
    """K clients at once, 3 edits each, against the same requests one at a time."""
    results, errors = {}, []

    def one(i: int) -> None:
        c = client(url)
        scene = f"scene{i % 4}.png"
        try:
            results[i] = [edit(c, scene, t, seed=i) for t in TARGETS]
        except Exception as e:  # noqa: BLE001 -- counted
            errors.append(repr(e)[:200])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(k)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.time() - start
    identical, reused = 0, 0
    for i, outs in results.items():
        again = [edit(client(url), f"scene{i % 4}.png", t, seed=i) for t in TARGETS[:1]]
        identical += Path(outs[0][0]).read_bytes() == Path(again[0][0]).read_bytes()
        reused += all(o[2]["inversion"]["cached"] for o in outs[1:])
    return {"sessions": k, "requests": 3 * k, "errors": len(errors), "error_examples": errors[:3], "seconds": round(took, 1),
            "identical_to_sequential": identical, "reused_inversions": reused}


def soak(server: Server, n: int) -> dict:
    """N requests, a new client every 20; RSS and file counts every 50."""
    from gradio_client import handle_file

    samples, errors, c = [], 0, None
    start = time.time()
    for i in range(n):
        if i % 20 == 0:
            c = client(server.url)
        scene = f"scene{i % 4}.png"
        try:
            if i % 3 == 0:
                c.predict(image=handle_file(str(SCENES / scene)), source_prompt=PROMPTS[scene], seed=i % 7, api_name="/invert")
            else:
                edit(c, scene, TARGETS[i % 3], seed=i % 7)
        except Exception:  # noqa: BLE001 -- counted
            errors += 1
        if i % 50 == 49 or i == n - 1:
            samples.append({"requests": i + 1, "seconds": round(time.time() - start, 1), "rss_mb": round(server.rss_mb(), 1), "files": server.files()})
    half = len(samples) // 2

    def per_100(a: dict, b: dict, key: str) -> float:
        return round((b[key] - a[key]) / max(1, b["requests"] - a["requests"]) * 100, 2)

    return {"requests": n, "errors": errors, "samples": samples,
            "rss_mb_per_100_first_half": per_100(samples[0], samples[half], "rss_mb"), "rss_mb_per_100_second_half": per_100(samples[half], samples[-1], "rss_mb"),
            "files_per_100_first_half": per_100(samples[0], samples[half], "files"), "files_per_100_second_half": per_100(samples[half], samples[-1], "files")}


def heavy(c, seed: int):
    from gradio_client import handle_file

    return c.submit(image=handle_file(str(SCENES / "scene0.png")), source_prompt=PROMPTS["scene0.png"], inverter="renoise", seed=seed, api_name="/invert")


def flood(url: str, jobs: int) -> dict:
    """One client floods the queue; another's single request waits how long, against one heavy job alone."""
    solo_start = time.time()
    heavy(client(url), 1000).result(timeout=600)
    solo = time.time() - solo_start
    flooder, other = client(url), client(url)
    submitted = [heavy(flooder, 2000 + k) for k in range(jobs)]
    time.sleep(0.5)
    start = time.time()
    edit(other, "scene1.png", "green", seed=5)
    waited = time.time() - start
    ran = dropped = 0
    for job in submitted:
        try:
            job.result(timeout=600)
            ran += 1
        except Exception:  # noqa: BLE001 -- dropped (only the latest of a client's queued requests runs)
            dropped += 1
    return {"flood_jobs": jobs, "ran": ran, "dropped": dropped, "one_heavy_job_s": round(solo, 2), "other_client_waited_s": round(waited, 2),
            "waited_in_heavy_jobs": round(waited / solo, 2)}


def cancel(url: str) -> dict:
    """A long request cancelled after a second: how soon another client's request is served."""
    from gradio_client import handle_file

    c = client(url)
    job = c.submit(image=handle_file(str(SCENES / "scene0.png")), source_prompt=PROMPTS["scene0.png"], inverter="fixed-point", steps=50,
                   inverter_params='{"iterations": 100, "tolerance": 0}', api_name="/invert")
    time.sleep(1.0)
    job.cancel()
    start = time.time()
    edit(client(url), "scene2.png", "yellow", seed=3)
    return {"served_after_cancel_s": round(time.time() - start, 2)}


def markdown(r: dict) -> str:
    s, k, f, c = r["soak"], r["sessions"], r["flood"], r["cancel"]
    return "\n".join([
        "| what | result |", "|---|---|",
        f"| start-up | listening after {r['listening_after_s']} s |",
        f"| {k['sessions']} sessions x 3 edits at once | {k['errors']} errors, {k['seconds']} s; {k['identical_to_sequential']}/{k['sessions']} bit-identical to one at a time; "
        f"{k['reused_inversions']}/{k['sessions']} reused their inversion |",
        f"| soak, {s['requests']} requests | {s['errors']} errors; RSS {s['samples'][0]['rss_mb']} -> {s['samples'][-1]['rss_mb']} MB "
        f"(+{s['rss_mb_per_100_first_half']} then +{s['rss_mb_per_100_second_half']} MB per 100 requests); files "
        f"{s['samples'][0]['files']} -> {s['samples'][-1]['files']} (+{s['files_per_100_first_half']} then +{s['files_per_100_second_half']} per 100) |",
        f"| flood: one client, {f['flood_jobs']} heavy requests | {f['ran']} ran, {f['dropped']} dropped; another client waited {f['other_client_waited_s']} s "
        f"= {f['waited_in_heavy_jobs']} heavy jobs ({f['one_heavy_job_s']} s each) |",
        f"| cancel a long request | the next client served {c['served_after_cancel_s']} s after the cancel |",
    ])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes-lcm")
    ap.add_argument("--sessions", type=int, default=32)
    ap.add_argument("--soak", type=int, default=1000)
    ap.add_argument("--flood", type=int, default=40)
    ap.add_argument("--file-age", type=float, default=60.0, help="seconds the server keeps each file it writes")
    ap.add_argument("--threads", type=int, default=None, help="the server's torch threads (default: app.py's choice)")
    ap.add_argument("--cache-mb", type=float, default=64.0, help="the server's inversion cache bound (app default 1024 MB: ~1,400 shapes-lcm inversions)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    server = Server(a.model, a.file_age, a.threads, a.cache_mb)
    try:
        result = {"model": a.model, "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}", "file_age_s": a.file_age,
                  "listening_after_s": round(server.listening_after, 1)}
        result["sessions"] = sessions(server.url, a.sessions)
        result["soak"] = soak(server, a.soak)
        result["flood"] = flood(server.url, a.flood)
        result["cancel"] = cancel(server.url)
    finally:
        server.stop()
    print(markdown(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
