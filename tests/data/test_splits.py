"""liverzoo.data.splits: the one case-level split (held-out fraction or k folds) and fold regrouping."""
import pytest

from liverzoo.data import splits, tfrecord
from liverzoo.errors import ConfigError

IDS = [f"case{i}" for i in range(11)]


def _val(split):
    return sorted(c for c, s in split.items() if s == "val")


def test_fold_split_is_a_partition():
    folds = [splits.split_cases(IDS, seed=3, num_folds=4, fold=k) for k in range(4)]
    val = [_val(f) for f in folds]
    assert sorted(sum(val, [])) == sorted(IDS)  # every case validates exactly once
    assert sorted(len(v) for v in val) == [2, 3, 3, 3]
    assert folds[0] == splits.split_cases(list(reversed(IDS)), seed=3, num_folds=4, fold=0)  # order-free, seeded
    with pytest.raises(ConfigError, match="needs at least 5 cases"):
        splits.split_cases(IDS[:4], seed=0, num_folds=5, fold=0)


def test_splits_are_those_of_the_functions_they_replace():
    """The folds of the former train_lib.fold_split and the split of tfrecord.split_cases, pinned (seed 3)."""
    want = [["case1", "case4", "case8"], ["case2", "case3", "case6"], ["case0", "case5", "case7"], ["case10", "case9"]]
    assert [_val(splits.split_cases(IDS, seed=3, num_folds=4, fold=k)) for k in range(4)] == want
    assert _val(splits.split_cases(IDS, 0.25, 3)) == ["case0", "case6", "case8"]
    assert tfrecord.split_cases is splits.split_cases


def test_a_fraction_and_folds_together_are_rejected():
    with pytest.raises(ConfigError, match="not both"):
        splits.split_cases(IDS, 0.2, 0, num_folds=2)
