"""FrozenTeacher: out of the parent's parameters and state, always eval, never any gradient."""

import copy

import pytest
import torch
import torch.nn as nn

from sard.models import FrozenTeacher, Prompts, SemanticOutput, build_model

pytestmark = pytest.mark.filterwarnings("ignore:.*random initialisation")


class Distiller(nn.Module):
    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.teacher = FrozenTeacher(teacher)


def _pair():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    teacher = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.BatchNorm1d(16), nn.Linear(16, 3))
    return Distiller(student, teacher), teacher


def test_teacher_is_outside_parameters_and_state_dict():
    parent, teacher = _pair()
    own = {id(p) for p in parent.parameters()}
    assert own == {id(p) for p in parent.student.parameters()}
    assert not own & {id(p) for p in teacher.parameters()}
    assert all(k.startswith("student.") for k in parent.state_dict())
    fresh, _ = _pair()
    fresh.load_state_dict(parent.state_dict())  # strict: nothing of the teacher is expected
    assert all(not p.requires_grad for p in teacher.parameters())


def test_teacher_stays_in_eval_mode_after_train():
    parent, teacher = _pair()
    parent.train()
    assert parent.student.training and not parent.teacher.training
    assert not any(m.training for m in teacher.modules())
    x = torch.randn(5, 4)
    torch.testing.assert_close(parent.teacher(x), parent.teacher(x))  # dropout is off
    stats = teacher[2].running_mean.clone()
    parent.teacher(x)
    assert torch.equal(stats, teacher[2].running_mean)  # BatchNorm statistics are not updated


def test_gradients_reach_the_student_and_never_the_teacher():
    parent, teacher = _pair()
    parent.train()
    x = torch.randn(6, 4)
    target = parent.teacher(x)
    assert not target.requires_grad
    loss = ((parent.student(x) - target) ** 2).mean()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in parent.student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    before = [p.clone() for p in teacher.parameters()]
    torch.optim.SGD(parent.parameters(), lr=1.0).step()
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))


def test_promptable_teacher_forwards_attributes_and_runs_without_grad():
    torch.manual_seed(0)
    sam = build_model("sam", size="tiny", image_size=64)
    student = build_model("efficient_sam", size="tiny", image_size=64)
    parent = Distiller(student, sam)
    parent.train()
    teacher = parent.teacher
    assert teacher.family == "sam" and teacher.tap_channels == {"image_embedding": 256}
    assert teacher.image_size == 64 and teacher.resize_mode == "longest_pad"
    images = torch.rand(1, 3, 64, 64) * 255
    feats = teacher.extract_features(images)
    prompts = Prompts(torch.tensor([[[[4.0, 4.0], [40.0, 50.0]]]]), torch.tensor([[[2, 3]]]))
    out = teacher.predict_masks(feats, prompts, chunk_size=1)
    assert not feats["image_embedding"].requires_grad and not out.mask_logits.requires_grad
    assert not teacher.postprocess_masks(out.mask_logits, (64, 64), (20, 20)).requires_grad
    s_feats = parent.student.extract_features(images)
    s_out = parent.student.predict_masks(s_feats, prompts)
    loss = (s_feats["image_embedding"] - feats["image_embedding"]).pow(2).mean()
    (loss + (s_out.mask_logits - out.mask_logits).pow(2).mean()).backward()
    assert student.image_encoder.pos_embed.grad is not None
    assert all(p.grad is None for p in sam.parameters())


def test_semantic_teacher_and_moves_with_parent():
    class TinySemantic(nn.Module):
        family = "toy"

        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(3, 5, 1)

        def forward_semantic(self, images, targets=None):
            logits = self.head(images)
            return SemanticOutput(features={"mask_features": logits}, sem_logits=logits)

    parent = Distiller(nn.Conv2d(3, 5, 1), TinySemantic())
    out = parent.teacher.forward_semantic(torch.rand(1, 3, 4, 4))
    assert out.sem_logits.shape == (1, 5, 4, 4) and not out.sem_logits.requires_grad
    parent.to(torch.float64)
    assert parent.teacher.module.head.weight.dtype == torch.float64
    twin = copy.deepcopy(parent)
    assert twin.teacher.family == "toy" and twin.teacher.module is not parent.teacher.module
    assert FrozenTeacher(parent.teacher).module is parent.teacher.module  # no double wrapping
    with pytest.raises(AttributeError):
        parent.teacher.no_such_attribute
