"""Datasets of the quickstart and the method comparison: made (or converted) once, reused after.

Each study registers its data under names of its own (``<prefix>_<split>``), so it never
depends on, nor clobbers, the built-in ``rockfrag_synth_*`` / ``gravel_fh_*`` / ``mnfinder_*``.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

from sard.data import DatasetCatalog, register_rockfrag
from sard.data.synthetic import SynthConfig
from sard.data.synthetic_dataset import SPLITS, generate_rockfrag_synth


def _json_info(path: str) -> Optional[Dict]:
    try:
        with open(path) as f:
            coco = json.load(f)
    except (OSError, ValueError):
        return None
    return {"info": coco.get("info", {}), "images": len(coco.get("images", []))}


def synth_is_current(folder: str, config: SynthConfig, counts: Dict[str, int], seed: int) -> bool:
    """True when ``folder`` holds every split of ``counts`` generated with ``config`` and
    ``seed`` (read back from each JSON's info), so it can be reused as is."""
    wanted = config.as_dict()
    for split, n in counts.items():
        if n <= 0:
            continue
        found = _json_info(os.path.join(folder, f"{split}.json"))
        if found is None or found["images"] != n:
            return False
        info = found["info"]
        if info.get("seed") != seed or info.get("config") != json.loads(json.dumps(wanted)):
            return False
        if not os.path.isdir(os.path.join(folder, split)):
            return False
    return True


def ensure_synth(
    folder: str,
    config: SynthConfig,
    counts: Dict[str, int],
    seed: int = 0,
    progress: bool = True,
) -> bool:
    """Generate the synthetic RockFrag splits ``counts`` into ``folder`` unless the same data is
    already there; returns True when it generated. Deterministic in (config, counts, seed)."""
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; use {SPLITS}")
    if synth_is_current(folder, config, counts, seed):
        return False
    generate_rockfrag_synth(
        folder, num_images=dict(counts), config=config, seed=seed, preview=True, progress=progress
    )
    return True


def register_splits(prefix: str, folder: str, splits: Sequence[str]) -> List[str]:
    """Register ``folder/<split>.json`` + ``folder/<split>/`` as ``<prefix>_<split>`` (COCO
    instances, promptable evaluation); returns the names. The study owns its prefix: a name
    registered earlier in this process for another folder is re-registered for this one."""
    from sard.data import MetadataCatalog

    names = []
    for split in splits:
        name = f"{prefix}_{split}"
        json_file = os.path.join(folder, f"{split}.json")
        image_root = os.path.join(folder, split)
        if not os.path.isfile(json_file):
            raise FileNotFoundError(f"{json_file} is missing: the {split} split of {folder}")
        if name in DatasetCatalog.list():
            known = MetadataCatalog.get(name).get("json_file", None)
            if known and os.path.abspath(known) == os.path.abspath(json_file):
                names.append(name)
                continue
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        register_rockfrag(name, json_file, image_root)
        names.append(name)
    return names


def ensure_gravel(source: str, folder: str) -> None:
    """Convert the real gravel label images (``source/{train,test}/X.jpg + X_mask.png``) to COCO
    in ``folder`` unless already done."""
    from sard.data.converters import find_label_pairs, labels_to_coco

    for split in ("train", "test"):
        if os.path.isfile(os.path.join(folder, f"{split}.json")):
            continue
        src = os.path.join(source, split)
        if not source or not os.path.isdir(src):
            raise FileNotFoundError(
                f"gravel source {src if source else '(none given)'} not found: pass "
                "--gravel-source (the folder holding train/ and test/ with X.jpg and X_mask.png)"
            )
        labels_to_coco(
            find_label_pairs(src),
            folder,
            split,
            category_name="grain",
            description=f"converted from {source}",
        )


def ensure_mnfinder(folder: str, progress: bool = True) -> None:
    """Convert the mnfinder package's microscopy splits to COCO in ``folder`` unless done."""
    from sard.data.mnfinder_data import mnfinder_to_coco

    missing = [
        s for s in ("train", "val", "test") if not os.path.isfile(os.path.join(folder, f"{s}.json"))
    ]
    if missing:
        mnfinder_to_coco(folder, splits=missing, progress=progress)


def link_coco_split(folder: str, split: str, json_file: str, image_root: str) -> None:
    """Lay out any COCO file and its image folder as ``folder/<split>.json`` and
    ``folder/<split>/`` (symbolic links, nothing copied), the layout the studies register and
    tile. A link already there must point to the same files: a study folder holds one dataset.
    """
    os.makedirs(folder, exist_ok=True)
    for link, target in (
        (os.path.join(folder, f"{split}.json"), json_file),
        (os.path.join(folder, split), image_root),
    ):
        target = os.path.abspath(target)
        if os.path.lexists(link):
            if os.path.realpath(link) != os.path.realpath(target):
                raise ValueError(
                    f"{link} points to {os.path.realpath(link)}, not {target}: this output "
                    "folder holds a study of other data; use another --out"
                )
            continue
        os.symlink(target, link)


def ensure_tiles(source: str, folder: str, tile: int, splits: Sequence[str]) -> None:
    """Cut ``source/<split>.json`` into ``tile`` px tiles under ``folder`` unless already done
    (see :mod:`sard.data.tiling`)."""
    from sard.data.tiling import tile_coco_split

    for split in splits:
        if os.path.isfile(os.path.join(folder, f"{split}.json")):
            continue
        tile_coco_split(
            os.path.join(source, f"{split}.json"), os.path.join(source, split), folder, split, tile
        )
