#!/usr/bin/env bash
# The six bugs the test audit injected (issue 15): each must make a test fail. Injects one at a time,
# runs the tests that should catch it, restores the file: bash scripts/injected_bugs.sh
cd "$(dirname "$0")/.."
run() { OMP_NUM_THREADS=1 timeout 900 "${VENV:-.venv}/bin/python" -m pytest -q -x -p no:randomly "$@" 2>&1 | tail -1; }
inject() { cp "$1" "${TMPDIR:-/tmp}/inject.bak"; python3 -c "
import sys; p, o, n = sys.argv[1], sys.argv[2], sys.argv[3]
s = open(p).read(); assert o in s, o; open(p, 'w').write(s.replace(o, n, 1))" "$1" "$2" "$3" || { echo "the patch no longer applies to $1: update it"; exit 1; }; }
revert() { cp "${TMPDIR:-/tmp}/inject.bak" "$1"; }

echo "1. latent_psnr: 20 dB instead of 0 for a constant reference"
inject inversion/metrics.py 'peak = float(ref.max() - ref.min()) or 1.0' 'peak = float(ref.max() - ref.min()) or 10.0'
run tests/test_metrics_images_tokens.py; revert inversion/metrics.py

echo "2. ReNoise: KL step with its sign flipped"
inject inversion/inverters/renoise.py 'eps = (e - p["lambda_kl"] * g.clamp(' 'eps = (e + p["lambda_kl"] * g.clamp('
run tests/test_inverters.py; revert inversion/inverters/renoise.py

echo "3. EasyInv: the blending window never ends"
inject inversion/inverters/easyinv.py 'if p["inject_start"] * n < i < (p["inject_start"] + p["inject_length"]) * n:' 'if p["inject_start"] * n < i:'
run tests/test_inverters.py; revert inversion/inverters/easyinv.py

echo "4. P2P refine drops the target's own attention term"
inject editing/p2p.py '                out[t] = out[t] + F.scaled_dot_product_attention(q[t], k[t], v[t] * own)' '                pass'
run tests/test_editing.py; revert editing/p2p.py

echo "5. The app's cache key drops the image hash"
inject demo/engine.py 'key = json.dumps([model.name, digest, req.prompt' 'key = json.dumps([model.name, req.prompt'
run tests/test_app.py; revert demo/engine.py

echo "6. P2P refine + reweight: the equaliser skips the target's own term"
inject editing/p2p.py '            if self.eq is not None:
                own = own * self.on_device("eq", lambda: self.eq, v)[:, None]' ''
run tests/test_editing.py; revert editing/p2p.py
git status --short  # nothing: every file is restored
