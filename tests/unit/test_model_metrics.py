"""InferenceMetrics.model: a model's children of every family, looked up once per model."""

from __future__ import annotations

from inference.metrics import InferenceMetrics


def test_a_models_children_are_the_families_own_and_looked_up_once() -> None:
    metrics = InferenceMetrics([])
    children = metrics.model("m")
    assert metrics.model("m") is children
    assert metrics.model("other") is not children
    assert children.ttft is metrics.ttft.labels("m")
    assert children.decode is metrics.decode.labels("m")
    assert children.generation_tokens is metrics.generation_tokens.labels("m")
    stop = children.request_success("stop")
    assert stop is metrics.request_success.labels("m", "stop")
    assert children.request_success("stop") is stop
    assert children.request_success("length") is not stop
    children.request_success("length").inc()
    assert (
        metrics.registry.get_sample_value(
            "tensorchat_inference_request_success_total",
            {"model_name": "m", "finished_reason": "length"},
        )
        == 1.0
    )
