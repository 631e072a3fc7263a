"""liverzoo.export.verify: the report is computed from both models and written beside the file."""
import json

import numpy as np
import pytest

from liverzoo import export, inference, lite
from tests.export.helpers import _random_stacks, _two_head_model


def test_verify_report_is_computed_from_both_models(tmp_path):
    from liverzoo import metrics

    model = _two_head_model()
    x = _random_stacks((16, 16, 3), 4, seed=3)
    path = export.write_tflite(export.convert_tflite(model, "int8", x, metadata={"quantize": "x"}),
                               tmp_path / "m_int8.tflite")
    report = export.verify_tflite(path, model, x)
    got, expected = lite.LiteModel(path).predict(x), inference.keras_predict_fn(model)(x)
    assert report["max_abs_prob_diff"] == pytest.approx(np.abs(got - expected).max())
    assert report["argmax_agreement"] == pytest.approx(np.mean(got.argmax(-1) == expected.argmax(-1)))
    assert report["dice"]["liver"] == pytest.approx(metrics.dice(got.argmax(-1) == 1, expected.argmax(-1) == 1))
    assert report["size_bytes"] == path.stat().st_size and report["ops"] == lite.tflite_ops(path)
    assert report["quantize"] == "int8" and report["float_ops"] == []
    assert json.loads((tmp_path / "m_int8.verify.json").read_text()) == report
