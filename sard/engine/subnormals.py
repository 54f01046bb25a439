"""Flush subnormal floats to zero on every CPU thread, and check that it reached them all.

Subnormal float32 values (|x| < 1.18e-38) take a slow path in x86 floating-point units. Once a
tiny SAM has trained a few hundred iterations on CPU its activations hold many, and a training
step is 1.5-1.6x slower (``tools/bench_subnormals.py``: 2.09 s against 1.30 s per step from the
same checkpoint, the same loss to four digits). Values that small carry no signal in training.

``torch.set_flush_denormal`` sets the flush-to-zero bits of the *calling* thread only. A thread
inherits them when it is created, so torch's OpenMP workers flush only if they were started
after the call: a process that ran any multi-threaded torch operation first (building a model,
generating data) keeps IEEE subnormals on every worker thread, and with 2 threads half of each
operation stays slow. Hence two rules, both applied here:

* call :func:`flush_subnormal_floats` before any other torch work in a process (``train_net.py``
  of both engines and the study tools do, first thing);
* the trainers call it again once logging is set up: it checks every thread
  (:func:`unflushed_share`) and logs the outcome, a warning with the fix when some threads
  were started too early.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

# Above torch's intra-op grain size (32768 elements), so a probe of this many elements per
# thread is split into one chunk per thread.
_PROBE_ELEMENTS_PER_THREAD = 1 << 16
# 2^-127, a float32 subnormal, given by its bit pattern: with flushing on, converting the literal
# 1e-39 to float32 would already give 0, and the probe would see every thread flush.
_SUBNORMAL_BITS = 0x00400000


def unflushed_share() -> float:
    """Share of a multi-threaded float32 multiply over subnormal operands whose results stay
    nonzero (subnormal): 0.0 when every intra-op thread flushes, about (N - k) / N when k of
    torch's N threads flush, 1.0 when none does.

    Operands and results are bit patterns, never float literals or comparisons: with flushing
    on, both would see every subnormal as 0 on the calling thread.
    """
    n = _PROBE_ELEMENTS_PER_THREAD * max(torch.get_num_threads(), 1)
    operand = torch.full((n,), _SUBNORMAL_BITS, dtype=torch.int32).view(torch.float32)
    product = operand * 1.5
    return float((product.view(torch.int32) != 0).float().mean())


def flush_subnormal_floats(check: bool = True) -> bool:
    """Make CPU arithmetic treat subnormal float32 values as 0 (``torch.set_flush_denormal``);
    with ``check``, probe every intra-op thread and log the outcome (a warning where some
    threads were started too early to flush: see the module docstring). Returns False where the
    CPU cannot (no SSE3), else True. Idempotent; it changes nothing on a GPU.

    ``check=False`` is for the first call of a process, before logging is configured (a log
    record then could reach a stale handler, e.g. one left by an earlier in-process run).
    """
    if not torch.set_flush_denormal(True):
        return False
    if not check:
        return True
    threads = torch.get_num_threads()
    share = unflushed_share()
    if share == 0.0:
        logger.info(
            "CPU arithmetic flushes subnormal floats to zero (torch.set_flush_denormal; "
            "checked on all %d intra-op threads)",
            threads,
        )
    else:
        logger.warning(
            "CPU arithmetic flushes subnormal floats to zero on some threads only: %.0f %% of a "
            "%d-thread probe stayed subnormal, because torch's worker threads were started "
            "before the flush and keep IEEE subnormals (CPU training steps slow down as they "
            "appear, 1.5x and more). Call sard.engine.subnormals.flush_subnormal_floats() "
            "before any other torch work in the process (tools/train_net.py does), or train "
            "with torch.set_num_threads(1).",
            100 * share,
            threads,
        )
    return True
