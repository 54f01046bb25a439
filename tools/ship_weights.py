#!/usr/bin/env python
"""Turn a training checkpoint into a file fit to ship under weights/, and print its SHA-256.

    python tools/ship_weights.py OUTPUT_DIR/model_final.pth --out weights/NAME.safetensors

Keeps the model's tensors only, names unchanged (a SARD training checkpoint's ``student.*``, so
``MODEL.TEACHER.WEIGHTS``, ``MODEL.WEIGHTS`` and ``--teacher-weights`` read it as they read
the checkpoint), and drops the optimizer, scheduler and RNG state (two thirds of an Adam
checkpoint). The output is safetensors: loading it runs no pickled code. The weights are
stored exactly (float32 stays float32), so evaluating the shipped file gives the checkpoint's
numbers. Prints the file's size and SHA-256 for weights/manifest.json; exits 1 when the file
is over the project's limit for shipped weights (--limit-mb, 25).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from cli_values import float_range  # noqa: E402
from sard.user_errors import UserError, run_tool  # noqa: E402

LIMIT_MB = 25.0  # the most a checkpoint under weights/ may weigh (the project's rule)


def argument_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a training checkpoint (.pth)")
    p.add_argument("--out", required=True, help="the file to write, ending in .safetensors")
    p.add_argument(
        "--limit-mb",
        type=float_range(0.0, lo_open=True),
        default=LIMIT_MB,
        help=f"refuse (exit 1) when the file is larger, MB of 10^6 bytes (default {LIMIT_MB})",
    )
    return p


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ship(checkpoint: str, out: str) -> dict:
    """Write the model tensors of ``checkpoint`` to ``out`` (safetensors); returns
    {"file", "bytes", "sha256", "tensors", "parameters"}."""
    from safetensors.torch import save_file

    from sard.models.checkpoint import read_state_dict

    if not out.endswith(".safetensors"):
        raise UserError(f"--out {out}: name it *.safetensors (that is the format written)")
    state = read_state_dict(checkpoint)  # the "model" entry of a training checkpoint
    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file(tensors, out, metadata={"source": os.path.basename(checkpoint)})
    return {
        "file": out,
        "bytes": os.path.getsize(out),
        "sha256": sha256_of(out),
        "tensors": len(tensors),
        "parameters": sum(v.numel() for v in tensors.values()),
    }


def main(argv=None) -> int:
    args = argument_parser().parse_args(argv)
    shipped = ship(args.checkpoint, args.out)
    mb = shipped["bytes"] / 1e6
    print(
        f"wrote {shipped['file']}: {shipped['tensors']} tensors, {shipped['parameters']:,} "
        f"parameters, {mb:.1f} MB"
    )
    print(f"sha256 {shipped['sha256']}")
    if mb > args.limit_mb:
        # Removed, not left beside the weights: a file on disk invites a commit over the limit.
        os.remove(shipped["file"])
        print(
            f"error: {mb:.1f} MB is over the {args.limit_mb:g} MB limit for shipped weights; "
            f"{shipped['file']} removed (a smaller model, or --limit-mb for a file not shipped)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
