"""What an evaluation scores of each task (`t2t_mtl.evaluation.selection`): its default split."""
from __future__ import annotations

from types import SimpleNamespace

from t2t_mtl.evaluation.selection import default_split, preferred_split


def test_the_default_evaluation_split_is_validation_else_test_else_the_last():
    # a benchmark's test split is often unlabeled (GLUE's labels are -1): validation must win wherever both are listed,
    # in any order; a preference for test, or for the first split listed, passed the suite
    for splits, expected in ((["train", "test", "validation"], "validation"), (["test", "validation"], "validation"),
                             (["train", "test"], "test"), (["train", "dev", "extra"], "extra"), (["train"], "train")):
        assert preferred_split(splits) == expected, splits
    assert default_split(SimpleNamespace(splits=["test", "train", "validation"])) == "validation"
    assert default_split(SimpleNamespace(splits=None)) == "validation"
