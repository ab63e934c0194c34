import pytest
import torch

from workers.engine.models.batching import collate, token_groups
from workers.engine.models.encoding import IGNORE_INDEX, EncodedSample


@pytest.mark.parametrize("lengths, budget", [([30, 10, 20, 25], 120), ([30, 10, 20, 25], None), ([5000], 4096),
                                             ([600] * 8, 4096)])  # no padding at all: nothing to save
def test_a_batch_that_fits_is_one_group_in_batch_order(lengths, budget):
    assert token_groups(lengths, budget) == [list(range(len(lengths)))]


def test_a_long_sample_is_not_padded_with_the_short_ones():
    # 4 × 4096 padded tokens would not fit 4096: the long one goes alone, the short ones together
    assert token_groups([100, 4096, 120, 90], 4096) == [[1], [2, 0, 3]]


def test_groups_fill_greedily_longest_first_and_ties_keep_batch_order():
    # padded sizes: [60, 50] 120 <= 130, + 40 → 180 > 130; [40, 40, 10] 120 <= 130
    assert token_groups([10, 60, 40, 50, 40], 130) == [[1, 3], [2, 4, 0]]
    # a sample over the budget on its own is a group of one
    assert token_groups([500, 20, 20], 100) == [[0], [1, 2]]
    assert token_groups([], 100) == []


def test_collate_pads_to_the_longest_sample_of_the_batch_only():
    samples = [EncodedSample(i, torch.arange(1, n + 1), torch.arange(1, n + 1), None) for i, n in enumerate([3, 5])]
    batch = collate(samples, pad_id=0)
    assert batch.input_ids.shape == (2, 5)
    assert batch.input_ids[0].tolist() == [1, 2, 3, 0, 0] and batch.labels[0, 3:].tolist() == [IGNORE_INDEX] * 2
    assert batch.attention_mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
