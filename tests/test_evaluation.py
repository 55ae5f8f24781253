import pytest
import torch

from dlcourse.course.evaluation import calibration, confusion_matrix, hardest_errors, per_class_accuracy


def test_confusion_matrix_by_hand():
    actual = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2])
    expected = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert torch.equal(confusion_matrix(actual, predicted, 3), expected)
    torch.testing.assert_close(per_class_accuracy(expected), torch.tensor([0.5, 1.0, 2 / 3]))


def test_ece_by_hand():
    # bins of width 0.5: (0, 0.5] holds 0.2, 0.4 (one right); (0.5, 1] holds 0.6, 0.9, 1.0 (two right)
    confidence = torch.tensor([0.2, 0.4, 0.6, 0.9, 1.0])
    correct = torch.tensor([1, 0, 1, 0, 1])
    result = calibration(confidence, correct, bins=2)
    low = abs(0.5 - 0.3) * 2 / 5
    high = abs(2 / 3 - (0.6 + 0.9 + 1.0) / 3) * 3 / 5
    assert result.ece == pytest.approx(low + high)
    assert result.bin_count == [2, 3]
    assert result.bin_accuracy == pytest.approx([0.5, 2 / 3])


def test_perfect_calibration_has_zero_ece_and_empty_bins_are_none():
    result = calibration(torch.ones(4), torch.ones(4), bins=10)
    assert result.ece == 0 and result.bin_count[-1] == 4 and result.bin_accuracy[0] is None


def test_hardest_errors_most_confident_first():
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]])
    actual = torch.tensor([1, 1, 1, 0])  # rows 0, 2, 3 are wrong, with confidence 0.9, 0.6, 0.95
    assert hardest_errors(probabilities, actual, 2).tolist() == [3, 0]
