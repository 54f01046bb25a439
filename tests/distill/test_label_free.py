"""Label-free distillation: folders of images, the teacher's pseudo-labels, mixing, both engines.

The teacher is a random tiny SAM whose masks are small and scattered (tests/sparse_masks.py)
with its mask logits scaled up, so predicted IoUs and stability scores spread over (0, 1) and
every filter has something to remove.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from sard.config import ConfigError, load_config
from sard.data import DatasetCatalog, DatasetError
from sard.data.image_folder import load_image_folder, register_image_folder
from sard.data.mixing import mix_records, mixed_counts
from sard.data.paths import register_dataset_paths
from sparse_masks import sparse_mask_model
from testkit import ENGINES, REPO, TINY_SAM, run_train_net

SIZE = 64
# Thresholds inside the spread of the test teacher's scores (IoU 0.45-0.65, stability 0.5-0.8),
# so every filter removes masks; 1 to 6 masks per image survive.
PSEUDO = {
    "POINTS_PER_SIDE": 8,
    "PRED_IOU_THRESH": 0.5,
    "STABILITY_SCORE_THRESH": 0.6,
    "BOX_NMS_THRESH": 0.7,
    "MIN_AREA": 5,
    "MAX_AREA_FRACTION": 0.25,
}


def _pseudo_opts(**changes):
    values = {**PSEUDO, **changes}
    out = ["MODEL.SARD.PSEUDO_LABELS.ENABLED", "True"]
    for key, value in values.items():
        out += [f"MODEL.SARD.PSEUDO_LABELS.{key}", str(value)]
    return out


def scattered_teacher() -> torch.nn.Module:
    """A tiny SAM with small scattered masks and logits x100 (scores spread over (0, 1))."""
    model = sparse_mask_model("sam", SIZE, offset=0.12)
    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(100.0)
            mlp.layers[-1].bias.mul_(100.0)
    return model


@pytest.fixture(scope="module")
def teacher_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "teacher.pth"
    state = scattered_teacher().state_dict()
    # A SARD training checkpoint: its student.* weights become the teacher.
    torch.save({"model": {f"student.{k}": v for k, v in state.items()}}, path)
    return str(path)


@pytest.fixture()
def photos(tiny_synth, tmp_path):
    """The 4 training images of the tiny synthetic set, without their labels, in a folder."""
    folder = tmp_path / "photos"
    shutil.copytree(os.path.join(tiny_synth, "rockfrag_synth", "train"), folder)
    (folder / "notes.txt").write_text("not an image")
    return str(folder)


def _opts(tiny_synth, out, train, teacher_weights, *extra):
    data = os.path.join(tiny_synth, "rockfrag_synth")
    return [
        "OUTPUT_DIR",
        str(out),
        "INPUT.IMAGE_SIZE",
        f"({SIZE}, {SIZE})",
        "INPUT.RANDOM_FLIP",
        "none",
        "MODEL.TEACHER.WEIGHTS",
        teacher_weights,
        "DATASETS.TRAIN",
        f"('{train}',)",
        "DATASETS.TEST",
        f"('{data}/val.json',)",
        "TEST.MAX_IMAGES",
        "1",
        "SEED",
        "3",
        *_pseudo_opts(),
        *extra,
    ]


def _trainer(tiny_synth, out, train, teacher_weights, *extra):
    from sard.engine import Trainer
    from sard.engine.setup import resolve_config

    cfg = resolve_config(
        load_config(TINY_SAM, _opts(tiny_synth, out, train, teacher_weights, *extra))
    )
    return Trainer(cfg)


def _count_teacher_images(trainer):
    """Wrap the teacher's image encoder: the returned list grows by the batch size per call."""
    model = trainer.model.teacher.module
    real = model.extract_features
    seen = []

    def counting(images, *args, **kwargs):
        seen.append(int(images.shape[0]))
        return real(images, *args, **kwargs)

    model.extract_features = counting
    return seen


# ---------------------------------------------------------------------- image folders
def test_a_folder_of_images_is_a_dataset_of_unlabeled_records(photos, tmp_path):
    records = load_image_folder(photos)
    names = sorted(f for f in os.listdir(photos) if f.endswith(".png"))
    assert [r["image_id"] for r in records] == names  # sorted, the text file ignored
    assert all(r["unlabeled"] and r["annotations"] == [] for r in records)
    assert all((r["height"], r["width"]) == (SIZE, SIZE) for r in records)
    register_image_folder("test_photos_folder", photos)
    assert len(DatasetCatalog.get("test_photos_folder")) == 4
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="holds no image file"):
        register_image_folder("test_empty_folder", str(empty))
    (empty / "broken.png").write_bytes(b"not a png")
    with pytest.raises(Exception, match="broken.png"):
        load_image_folder(str(empty))


def test_a_folder_without_pseudo_labels_is_refused_in_one_line(photos, tiny_synth, tmp_path):
    with pytest.raises(DatasetError) as err:
        register_dataset_paths("DATASETS.TRAIN", [photos], semantic=False)
    message = str(err.value)
    assert "\n" not in message
    assert "MODEL.SARD.PSEUDO_LABELS.ENABLED" in message and photos in message
    with pytest.raises(DatasetError, match="cannot be evaluated"):
        register_dataset_paths("DATASETS.TEST", [photos], semantic=False, unlabeled_ok=True)
    # A folder registered by name is refused when training starts, with the same message.
    from sard.engine.builders import training_records

    register_image_folder("test_photos_by_name", photos)
    cfg = load_config(TINY_SAM, ["DATASETS.TRAIN", "('test_photos_by_name',)"])
    with pytest.raises(DatasetError, match="PSEUDO_LABELS.ENABLED True"):
        training_records(cfg)
    # Through the command line: exit status 1 and one line on stderr.
    res = subprocess.run(
        [sys.executable, "tools/train_net.py", "--engine", "sard", "--config-file", TINY_SAM]
        + ["DATASETS.TRAIN", f"('{photos}',)", "OUTPUT_DIR", str(tmp_path / "cli")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert res.returncode == 2  # run_tool: an expected error, told in one line
    lines = [x for x in res.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "PSEUDO_LABELS.ENABLED" in lines[0], res.stderr


def test_pseudo_label_settings_are_validated():
    from sard.config import validate_config

    for key, value in [
        ("POINTS_PER_SIDE", "0"),
        ("PRED_IOU_THRESH", "1.5"),
        ("MAX_AREA_FRACTION", "0.0"),
        ("UNLABELED_FRACTION", "1.0"),
        ("MIN_AREA", "-1"),
    ]:
        cfg = load_config(TINY_SAM, [f"MODEL.SARD.PSEUDO_LABELS.{key}", value])
        with pytest.raises(ConfigError, match=f"PSEUDO_LABELS.{key}"):
            validate_config(cfg)
    semantic = os.path.join(REPO, "configs", "tiny", "m2f_tiny.yaml")
    with pytest.raises(ConfigError, match="promptable pair"):
        validate_config(load_config(semantic, ["MODEL.SARD.PSEUDO_LABELS.ENABLED", "True"]))


# ---------------------------------------------------------------------- mixing
@pytest.mark.parametrize("n_l,n_u,f", [(6, 60, 0.5), (6, 60, 0.9), (40, 3, 0.25), (7, 7, 0.3)])
def test_the_mixed_ratio_holds(n_l, n_u, f):
    labelled = [{"image_id": f"l{i}"} for i in range(n_l)]
    unlabeled = [{"image_id": f"u{i}", "unlabeled": True} for i in range(n_u)]
    mixed = mix_records(labelled, unlabeled, f)
    share = sum(bool(r.get("unlabeled")) for r in mixed) / len(mixed)
    assert abs(share - f) <= 0.5 / len(mixed)
    # Every image appears; no group is repeated more than its share needs.
    assert {r["image_id"] for r in mixed} == {r["image_id"] for r in labelled + unlabeled}
    n_lab, n_unl = mixed_counts(n_l, n_u, f)
    assert min(n_lab // n_l, n_unl // n_u) == 1
    # 0 keeps the plain concatenation.
    assert len(mix_records(labelled, unlabeled, 0.0)) == n_l + n_u


def test_training_records_mix_labelled_and_unlabeled_at_the_configured_share(
    photos, tiny_synth, teacher_weights, tmp_path
):
    from sard.engine.builders import training_records
    from sard.engine.data import global_indices

    data = os.path.join(tiny_synth, "rockfrag_synth")
    big = tmp_path / "many"
    big.mkdir()
    for i in range(5):  # 20 unlabeled images against 4 labelled ones
        for name in os.listdir(photos):
            if name.endswith(".png"):
                shutil.copy(os.path.join(photos, name), big / f"{i}_{name}")
    opts = ["DATASETS.TRAIN", f"('{data}/train.json', '{big}')", *_pseudo_opts()]
    opts += ["DATASETS.TEST", f"('{data}/val.json',)"]
    from sard.engine.setup import resolve_config

    for fraction in (0.0, 0.5, 0.25):
        cfg = resolve_config(
            load_config(
                TINY_SAM, opts + ["MODEL.SARD.PSEUDO_LABELS.UNLABELED_FRACTION", str(fraction)]
            )
        )
        records = training_records(cfg)
        unlabeled = sum(bool(r.get("unlabeled")) for r in records)
        if fraction == 0.0:
            assert (len(records), unlabeled) == (24, 20)
            continue
        assert abs(unlabeled / len(records) - fraction) <= 0.5 / len(records)
        # What the trainer draws over two epochs keeps the share.
        drawn = [records[i] for i in global_indices(len(records), 0, 0, 2 * len(records))]
        assert sum(bool(r.get("unlabeled")) for r in drawn) == 2 * unlabeled


# ---------------------------------------------------------------------- the labeler
def _labeler(teacher, store=None, **changes):
    from sard.distill.pseudo_labels import PromptSettings, PseudoLabeler, PseudoLabelSettings

    settings = {
        "points_per_side": PSEUDO["POINTS_PER_SIDE"],
        "pred_iou_thresh": PSEUDO["PRED_IOU_THRESH"],
        "stability_score_thresh": PSEUDO["STABILITY_SCORE_THRESH"],
        "box_nms_thresh": PSEUDO["BOX_NMS_THRESH"],
        "min_area": PSEUDO["MIN_AREA"],
        "max_area_fraction": PSEUDO["MAX_AREA_FRACTION"],
        **changes,
    }
    return PseudoLabeler(
        teacher,
        PseudoLabelSettings(**settings),
        PromptSettings(max_prompts=3),
        "longest_pad",
        store,
    )


def _model_input(path):
    from sard.data import read_image

    return torch.from_numpy(read_image(path).copy()).permute(2, 0, 1).float()


class _Rounded:
    """Mixin: the image embedding rounded to float16 after encoding."""

    def set_torch_image(self, *args, **kwargs):
        super().set_torch_image(*args, **kwargs)
        self.features = self.features.half().float()


def RoundedPredictor(model):
    from sard.export.predictor import SardPredictor

    return type("RoundedPredictor", (_Rounded, SardPredictor), {})(model)


def test_pseudo_labels_respect_every_filter(photos):
    from pycocotools import mask as mask_util

    from sard.export.automatic import SardAutomaticMaskGenerator

    teacher = scattered_teacher()
    paths = sorted(glob.glob(os.path.join(photos, "*.png")))
    removed = {"iou": 0, "stability": 0, "area": 0}
    for path in paths:
        image = _model_input(path)
        labels = _labeler(teacher).labels_for(image, (SIZE, SIZE), None)
        areas = mask_util.area(labels.rles) if len(labels) else []
        assert all(v > PSEUDO["PRED_IOU_THRESH"] for v in labels.predicted_iou)
        assert all(v >= PSEUDO["STABILITY_SCORE_THRESH"] for v in labels.stability_score)
        assert all(PSEUDO["MIN_AREA"] <= a <= PSEUDO["MAX_AREA_FRACTION"] * SIZE**2 for a in areas)
        # Exactly the automatic mask generator's masks on the teacher (its embedding rounded to
        # float16, as the labeler uses it), then the area filters.
        generator = SardAutomaticMaskGenerator(
            RoundedPredictor(teacher),
            points_per_side=8,
            pred_iou_thresh=PSEUDO["PRED_IOU_THRESH"],
            stability_score_thresh=PSEUDO["STABILITY_SCORE_THRESH"],
            box_nms_thresh=PSEUDO["BOX_NMS_THRESH"],
            output_mode="coco_rle",
        )
        pixels = image.round().to(torch.uint8).permute(1, 2, 0).numpy()
        reference = generator.generate(pixels)
        kept = [
            r["segmentation"]
            for r in reference
            if PSEUDO["MIN_AREA"] <= r["area"] <= PSEUDO["MAX_AREA_FRACTION"] * SIZE**2
        ]
        assert kept == labels.rles, path
        removed["area"] += len(reference) - len(kept)
        # Without a threshold, masks below it appear: each filter has something to remove.
        loose = _labeler(teacher, pred_iou_thresh=0.0).labels_for(image, (SIZE, SIZE), None)
        removed["iou"] += sum(v <= PSEUDO["PRED_IOU_THRESH"] for v in loose.predicted_iou)
        loose = _labeler(teacher, stability_score_thresh=0.0).labels_for(image, (SIZE, SIZE), None)
        low = PSEUDO["STABILITY_SCORE_THRESH"]
        removed["stability"] += sum(not v >= low for v in loose.stability_score)
    assert all(v > 0 for v in removed.values()), removed


def test_pseudo_labels_give_the_prompts_and_targets(photos):
    from sard.data.mapper import PromptDatasetMapper

    teacher = scattered_teacher()
    mapper = PromptDatasetMapper(is_train=True, image_size=SIZE, resize_mode="longest_pad")
    record = load_image_folder(photos)[2]
    torch.manual_seed(0)
    sample = mapper(record)
    assert sample["unlabeled"] and sample["points"].shape[0] == 0
    labeler = _labeler(teacher)
    labels = labeler.labels_for(sample["image"], sample["input_hw"], None)
    assert len(labels) > 3  # more masks than prompts: a random subset is drawn
    out = labeler.attach(sample, labels)
    masks, boxes = out["gt_masks"].numpy(), out["boxes"].numpy()
    assert masks.shape == (3, SIZE, SIZE) and out["points"].shape[0] == 3
    from sard.data.masks import decode_many

    all_masks = decode_many(labels.rles, SIZE, SIZE)
    for mask, box in zip(masks, boxes):
        assert any(np.array_equal(mask, m) for m in all_masks)
        ys, xs = np.nonzero(mask)
        assert (
            box[0] <= xs.min() and box[1] <= ys.min() and box[2] >= xs.max() and box[3] >= ys.max()
        )
    # The same seed draws the same prompts; unlabeled images cannot be evaluated.
    again = labeler.attach(sample, labels)
    assert torch.equal(again["points"], out["points"]) and torch.equal(
        again["gt_masks"], out["gt_masks"]
    )
    with pytest.raises(DatasetError, match="unlabeled image"):
        PromptDatasetMapper(is_train=False, image_size=SIZE, resize_mode="longest_pad")(record)


def test_a_damaged_disk_entry_is_recomputed_with_a_warning(photos, tmp_path):
    from sard.distill.pseudo_label_store import PseudoLabelStore

    teacher = scattered_teacher()
    image = _model_input(sorted(glob.glob(os.path.join(photos, "*.png")))[0])
    store = PseudoLabelStore(str(tmp_path), {"teacher": "scattered"})
    first = _labeler(teacher, store).labels_for(image, (SIZE, SIZE), None)
    (entry,) = [
        p for p in glob.glob(str(tmp_path / "pseudo_labels-*" / "*.json")) if "identity" not in p
    ]
    data = json.load(open(entry))
    data["content"]["predicted_iou"][0] = 0.99
    json.dump(data, open(entry, "w"))
    labeler = _labeler(teacher, PseudoLabelStore(str(tmp_path), {"teacher": "scattered"}))
    with pytest.warns(UserWarning, match="checksum"):
        again = labeler.labels_for(image, (SIZE, SIZE), None)
    assert again.content() == first.content() and labeler.labelled == 1
    # Another identity (another teacher or threshold) never reads these entries.
    other = PseudoLabelStore(str(tmp_path), {"teacher": "another"})
    assert other.directory != store.directory and len(other) == 0


# ---------------------------------------------------------------------- training
@pytest.mark.parametrize("method", ["sard", "none"])
def test_the_teacher_runs_once_per_image(method, photos, tiny_synth, teacher_weights, tmp_path):
    """4 images, batch 2, 3 epochs, cache on: 4 images through the teacher's encoder (its taps
    and its pseudo-labels), and none at all in a second run on the same cache folder."""
    cache = ["MODEL.SARD.CACHE.ENABLED", "True", "MODEL.SARD.CACHE.DIR", str(tmp_path / "cache")]
    extra = ["MODEL.SARD.METHOD", method, "SOLVER.MAX_ITER", "6", *cache]
    trainer = _trainer(tiny_synth, tmp_path / "a", photos, teacher_weights, *extra)
    seen = _count_teacher_images(trainer)
    trainer.train()
    labeler = trainer.model.pseudo_labeler
    assert sum(seen) == 4 and labeler.labelled == 4 and labeler.masks > 0
    files = glob.glob(str(tmp_path / "cache" / "pseudo_labels-*" / "*.json"))
    assert len(files) == 5  # 4 entries + identity.json
    again = _trainer(tiny_synth, tmp_path / "b", photos, teacher_weights, *extra)
    seen = _count_teacher_images(again)
    again.train()
    assert sum(seen) == 0 and again.model.pseudo_labeler.labelled == 0


def test_pseudo_labels_and_training_are_deterministic_for_a_seed(
    photos, tiny_synth, teacher_weights, tmp_path
):
    def run(out, seed):
        trainer = _trainer(
            tiny_synth, out, photos, teacher_weights, "SOLVER.MAX_ITER", "4", "SEED", str(seed)
        )
        batches = []
        real = trainer.model.pseudo_labeler.attach
        trainer.model.pseudo_labeler.attach = lambda s, l: batches.append(real(s, l)) or batches[-1]
        results = trainer.train()
        store = trainer.model.pseudo_labeler.store._memory
        return results, {k: v.content() for k, v in store.items()}, batches

    first, labels_a, batches_a = run(tmp_path / "a", 3)
    second, labels_b, batches_b = run(tmp_path / "b", 3)
    assert labels_a == labels_b and len(labels_a) == 4
    assert first == second
    for x, y in zip(batches_a, batches_b):
        assert torch.equal(x["points"], y["points"]) and torch.equal(x["gt_masks"], y["gt_masks"])
    _, labels_c, batches_c = run(tmp_path / "c", 4)
    assert labels_c == labels_a  # the masks depend on the teacher, not the seed
    assert any(not torch.equal(x["points"], y["points"]) for x, y in zip(batches_a, batches_c))


@pytest.mark.parametrize("engine", ENGINES)
def test_a_tiny_label_free_run_trains_and_evaluates(
    engine, photos, tiny_synth, teacher_weights, tmp_path
):
    """tools/train_net.py on a folder of images (mixed with the labelled set at one half):
    trains, evaluates on the labelled test set, and both engines store the same pseudo-labels."""
    data = os.path.join(tiny_synth, "rockfrag_synth")
    out = tmp_path / engine
    opts = _opts(tiny_synth, out, photos, teacher_weights)
    train = opts.index("DATASETS.TRAIN") + 1
    opts[train] = f"('{data}/train.json', '{photos}')"
    opts += ["MODEL.SARD.PSEUDO_LABELS.UNLABELED_FRACTION", "0.5", "SOLVER.MAX_EPOCHS", "2"]
    opts += ["MODEL.SARD.CACHE.ENABLED", "True", "MODEL.SARD.CACHE.DIR", str(out / "cache")]
    res = run_train_net("--config-file", TINY_SAM, *opts, engine=engine)
    assert res.returncode == 0, res.stderr[-4000:]
    log = open(out / "log.txt").read()
    assert "4 labelled + 4 unlabeled images -> 8 samples per epoch, 50% unlabeled" in log
    assert "training contract: 8 iterations (2 epochs x 8 images / batch 2)" in log
    lines = [json.loads(x) for x in open(out / "metrics.json")]
    assert [x["iteration"] for x in lines if "total_loss" in x] == list(range(8))
    assert glob.glob(str(out / "inference" / "*" / "sard_instances.json"))
    entries = sorted(glob.glob(str(out / "cache" / "pseudo_labels-*" / "*.json")))
    assert len(entries) == 5
    if engine == "detectron2":  # the same pseudo-labels as the built-in engine's
        ours = _a_tiny_run_with_the_builtin_engine(opts, out, tmp_path)
        assert [os.path.basename(p) for p in ours] == [os.path.basename(p) for p in entries]
        for a, b in zip(ours, entries):
            assert json.load(open(a)) == json.load(open(b))


def _a_tiny_run_with_the_builtin_engine(opts, d2_out, tmp_path):
    out = tmp_path / "builtin"
    opts = [str(out) if v == str(d2_out) else v for v in opts]
    opts = [v.replace(str(d2_out), str(out)) for v in opts]
    res = run_train_net("--config-file", TINY_SAM, *opts, engine="sard")
    assert res.returncode == 0, res.stderr[-4000:]
    return sorted(glob.glob(str(out / "cache" / "pseudo_labels-*" / "*.json")))


def test_images_without_any_pseudo_mask_train_and_say_which_threshold(
    photos, tiny_synth, teacher_weights, tmp_path, caplog
):
    """IoU threshold 1: the teacher keeps no mask; the steps still train (task loss 0 without
    prompts) and the log names the threshold to lower."""
    import logging

    extra = ["SOLVER.MAX_ITER", "2", "MODEL.SARD.PSEUDO_LABELS.PRED_IOU_THRESH", "1.0"]
    trainer = _trainer(tiny_synth, tmp_path, photos, teacher_weights, *extra)
    with caplog.at_level(logging.WARNING, logger="sard.distill.pseudo_labels"):
        trainer.train()
    assert trainer.model.pseudo_labeler.masks == 0
    assert "lower MODEL.SARD.PSEUDO_LABELS.PRED_IOU_THRESH" in caplog.text
    lines = [json.loads(x) for x in open(tmp_path / "metrics.json")]
    losses = [x for x in lines if "total_loss" in x]
    assert len(losses) == 2 and all(np.isfinite(x["total_loss"]) for x in losses)
    assert all(x["loss_mask_dice"] == 0 for x in losses)  # no prompt, no task loss
