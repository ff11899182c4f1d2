"""Python side of scripts/bench-classifier: PIL + onnxruntime, JSON on stdout.

Usage: bench.py PACK_DIR THREADS BATCH ROUNDS FILE...
"""

import json
import sys
import time

import reference

pack, threads, batch, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
r = reference.bench(pack, sys.argv[5:], threads, batch, rounds)
r["wall_ms_per_image"] = r["decode_ms"] + r["preprocess_ms"] + r["inference_ms"]
print(json.dumps(r))
