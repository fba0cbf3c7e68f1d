"""Accuracy, ECE, AUROC and FPR@95 on crafted cases with known answers."""

import math

import pytest
import torch

from sem_fast.eval.metrics import accuracy, auroc, expected_calibration_error, fpr_at_tpr, max_softmax


def test_auroc_of_perfectly_separated_scores_is_100_and_reversed_is_0():
    pos, neg = torch.tensor([0.9, 0.8, 0.95]), torch.tensor([0.1, 0.5, 0.7, 0.2])
    assert auroc(pos, neg) == 100.0
    assert auroc(neg, pos) == 0.0


def test_auroc_of_identical_scores_is_50():
    assert auroc(torch.full((7,), 0.3), torch.full((4,), 0.3)) == 50.0


def test_auroc_counts_ties_as_half_a_correct_pair():
    # Pairs (pos, neg): (1,2) 0, (1,0) 1, (2,2) 0.5, (2,0) 1, (2,2) 0.5, (2,0) 1 -> 4 of 6.
    assert auroc(torch.tensor([1.0, 2.0, 2.0]), torch.tensor([2.0, 0.0])) == pytest.approx(400 / 6)


def test_auroc_matches_pairwise_count_on_random_scores_with_ties():
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 6, (53,), generator=g).float()
    neg = torch.randint(0, 6, (41,), generator=g).float()
    pairwise = ((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()).mean()
    assert auroc(pos, neg) == pytest.approx(100 * float(pairwise), abs=1e-9)


def test_fpr_at_95_tpr_uses_the_highest_threshold_keeping_95_percent_of_positives():
    pos = torch.arange(1, 101).float()  # the 95 highest are 6..100, so the threshold is 6
    neg = torch.tensor([5.0, 6.0, 50.0, 1.0])  # 6 (a tie at the threshold) and 50 pass
    assert fpr_at_tpr(pos, neg) == 50.0
    assert fpr_at_tpr(pos, torch.tensor([0.0, 5.9])) == 0.0


def test_fpr_at_95_tpr_of_identical_scores_is_100():
    assert fpr_at_tpr(torch.ones(20), torch.ones(3)) == 100.0


@pytest.mark.parametrize("bad", [torch.tensor([]), torch.tensor([float("nan"), 1.0]), torch.ones(2, 2)])
def test_ood_scores_reject_empty_nonfinite_or_2d_input(bad):
    with pytest.raises(ValueError, match="positive scores"):
        auroc(bad, torch.ones(3))
    with pytest.raises(ValueError, match="negative scores"):
        fpr_at_tpr(torch.ones(3), bad)


def test_accuracy_counts_argmax_hits():
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0], [1.0, 1.5]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 0])) == 50.0


def test_ece_of_constant_confidence_is_its_gap_to_accuracy():
    # Every sample gets softmax confidence p on class 0; 3 of 10 labels are 0.
    logits = torch.tensor([[math.log(4.0), 0.0]]).expand(10, 2)  # p = 4 / 5 = 0.8
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    assert expected_calibration_error(logits, labels) == pytest.approx(100 * abs(0.8 - 0.3), abs=1e-5)


def test_ece_weights_bins_by_their_sample_count():
    # Bin of p=0.9: 4 samples, 3 correct (gap 0.15); bin of p=0.6: 6 samples, all correct (gap 0.4).
    hi, lo = math.log(9.0), math.log(1.5)
    logits = torch.tensor([[hi, 0.0]] * 4 + [[lo, 0.0]] * 6)
    labels = torch.tensor([0, 0, 0, 1] + [0] * 6)
    expected = 100 * (4 / 10 * 0.15 + 6 / 10 * 0.4)
    assert expected_calibration_error(logits, labels) == pytest.approx(expected, abs=1e-4)


def test_max_softmax_is_the_largest_probability():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    torch.testing.assert_close(max_softmax(logits), torch.tensor([0.5, 0.75]))


def test_accuracy_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels must have shape"):
        accuracy(torch.zeros(3, 2), torch.zeros(4, dtype=torch.int64))
