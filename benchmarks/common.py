"""Helpers every benchmark here shares: interleaved timing, peak memory in a fresh process, the
machine's description, and the report (a table on stdout, a JSON file under `results/`)."""
import gc
import json
import os
import platform
import re
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
import transformers

RESULTS_DIR = Path(__file__).parent / "results"


def machine_info():
    """What the numbers depend on: CPU, threads, library versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    flags = set(re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M).group(1).split()) if cpuinfo else set()
    return {
        "cpu": model.group(1) if model else platform.processor(),
        "cpu_count": os.cpu_count(),
        # Without native bf16 instructions, bf16 matmuls are emulated and autocast is slow.
        "cpu_bf16_instructions": sorted(flags & {"avx512_bf16", "amx_bf16"}),
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": os.getloadavg()[0],  # other work on the machine slows both contestants
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
    }


def time_interleaved(steps, repeats, warmup):
    """Seconds per call of each function in `steps` ({name: fn}).

    After `warmup` calls of each, the functions take turns (A, B, A, B, ...) `repeats` times, so slow
    drifts of the machine's speed (clock, caches, other load) hit every contestant alike.
    """
    for _ in range(warmup):
        for step in steps.values():
            step()
    seconds = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def throughput(seconds, items_per_call):
    """Items per second of each timed call: median, min and max."""
    rates = [items_per_call / s for s in seconds]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def paired_speedup(seconds, reference_seconds):
    """Median over repeats of reference time / time, each pair timed back to back: steadier than the
    ratio of medians when the machine's load changes during the run."""
    return statistics.median(r / s for s, r in zip(seconds, reference_seconds))


def _status_kib(field):
    return int(re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1))


def _peak_growth(setup, args, calls):
    step = setup(*args)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # Linux: resets the peak (VmHWM) to the current RSS
    before = _status_kib("VmRSS")
    for _ in range(calls):
        step()
    return (_status_kib("VmHWM") - before) * 1024


def peak_memory_in_subprocess(setup, *args, calls=3):
    """Peak resident-memory growth, in bytes, while a fresh process calls `setup(*args)()` `calls` times.

    `setup` (a module-level function, so it can be sent to the process) builds what the step needs and
    returns the step. The peak is reset after `setup`, so the growth counts what the steps allocate:
    activations, gradients, optimizer state; not the model or the process's earlier peaks. A fresh
    process per measurement keeps one contestant's freed-but-cached memory from hiding the other's.
    Linux only (/proc/self/clear_refs).
    """
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_peak_growth, setup, args, calls).result()


def format_table(header, rows):
    """Left-aligned first column, right-aligned others, columns as wide as their widest cell."""
    cells = [list(map(str, header))] + [list(map(str, row)) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(filename, payload):
    """Write `payload` to `results/<filename>` and return the path."""
    path = RESULTS_DIR / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path
