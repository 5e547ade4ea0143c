"""Peak memory and time of a long text prefill: SDPA's ``is_causal`` vs a dense [L, L] boolean mask.

Run: ``python benchmarks/bench_prefill_memory.py``. Each variant runs in a fresh subprocess (peak
RSS is per process) on the tiny model, prefilling one text of L tokens; the dense variant forces the
mask the attention used before it described causal splits by their lengths. Prints the growth of
peak RSS over the loaded model, the time, and the dense / length-only ratios.
"""

import json
import resource
import subprocess
import sys
import time

LENGTHS = (1024, 4000)


def child(length: int, dense: bool) -> None:
    import torch

    from robust_u1 import TextBlock
    from robust_u1.attention import PackedAttentionLayout
    from robust_u1.tiny import tiny_random_model

    torch.set_num_threads(1)
    if dense:
        PackedAttentionLayout.sequence_attention = lambda self, index, device, grouped_query=False: (
            self.sequence_mask(index, device), False
        )
    model, _ = tiny_random_model(seed=0)
    ids = torch.randint(0, 200, (length - 2,))
    with torch.no_grad():
        model.prefill(model.new_cache(1), [TextBlock(ids[:10])])  # warm-up
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        model.prefill(model.new_cache(1), [TextBlock(ids)])
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mib": (peak - base) / 1024, "seconds": seconds}))


def main() -> None:
    print(f"{'tokens':>7} | {'is_causal MiB':>13} | {'dense MiB':>9} | {'is_causal s':>11} | {'dense s':>7} | {'MiB ratio':>9}")
    for length in LENGTHS:
        results = {}
        for dense in (False, True):
            out = subprocess.run([sys.executable, __file__, str(length), str(int(dense))], capture_output=True, text=True, check=True)
            results[dense] = json.loads(out.stdout.strip().splitlines()[-1])
        lean, full = results[False], results[True]
        ratio = full["mib"] / max(lean["mib"], 1e-3)
        print(f"{length:>7} | {lean['mib']:>13.1f} | {full['mib']:>9.1f} | {lean['seconds']:>11.3f} | {full['seconds']:>7.3f} | {ratio:>9.1f}")


if __name__ == "__main__":
    if len(sys.argv) == 3:
        child(int(sys.argv[1]), bool(int(sys.argv[2])))
    else:
        main()
