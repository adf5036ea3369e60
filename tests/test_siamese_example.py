"""The Siamese example in docs/siamese_example.md, run as written: the fused
embedding loss and a distance layer + ContrastiveLoss train identically."""

import re
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "siamese_example.md"


def test_siamese_example_trains_like_a_distance_layer(capsys):
    (code,) = re.findall(r"```python\n(.*?)```", EXAMPLE.read_text(), flags=re.DOTALL)
    namespace = {}
    exec(compile(code, str(EXAMPLE), "exec"), namespace)
    fused = namespace["fused_history"].history["loss"]
    distance = namespace["distance_history"].history["loss"]
    assert len(fused) == 5
    np.testing.assert_allclose(fused, distance, rtol=1e-5)
    assert fused[-1] < 0.8 * fused[0]  # it learned something
    for fused_weights, distance_weights in zip(
        namespace["fused_model"].get_weights(), namespace["distance_model"].get_weights()
    ):
        np.testing.assert_allclose(fused_weights, distance_weights, rtol=1e-4, atol=1e-5)
    assert "fused" in capsys.readouterr().out
