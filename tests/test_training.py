"""A few hundred SEM steps on the bundled real CIFAR-10 subset reduce the training loss."""

import math

import torch
import torch.nn.functional as F

from sem_fast import SEMConfig, fused_sem_step
from sem_fast.data import load_bundled
from sem_fast.models import PreActResNet18
from sem_fast.reference import normalize
from tests.utils import set_seed


def _clean_ce(model, images, labels, cfg):
    model.eval()
    with torch.no_grad():
        ce = F.cross_entropy(model(normalize(images, cfg)), labels).item()
    model.train()
    return ce


def test_sem_training_on_real_images_reduces_the_training_loss():
    set_seed(0)
    images, labels = load_bundled("train")
    cfg = SEMConfig(mix="switch", gamma=1.0, crop_padding=4, hflip=True, backend="reference")
    model = PreActResNet18(num_classes=10, width=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    generator = torch.Generator().manual_seed(0)
    probe = torch.arange(0, 3000, 6)  # 500 fixed training images, all classes
    before = _clean_ce(model, images[probe], labels[probe], cfg)
    sems = []
    for _ in range(300):
        idx = torch.randint(0, len(images), (32,), generator=generator)
        out = fused_sem_step(model, images[idx], labels[idx], cfg, generator=generator)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sems.append(out.sem.item())
    after = _clean_ce(model, images[probe], labels[probe], cfg)
    # Chance level is log(10) = 2.30; 300 steps of width-8 training reach about 1.7.
    assert after < min(before, math.log(10)) - 0.3, (before, after)
    assert all(s >= 0 for s in sems) and max(sems) > 0
