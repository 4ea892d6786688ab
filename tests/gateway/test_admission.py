"""Admission by capacity, as a pure policy: recent dispatch latencies in, a refusal out."""

from __future__ import annotations

from gateway.inference.admission import Admission


def test_headroom_until_enough_late_frames_then_busy_until_they_age_out() -> None:
    admission = Admission(0.05, window_s=2.0, min_samples=10)
    for i in range(9):
        admission.observe(i * 0.01, 0.2)
    assert admission.refusal(0.1) is None  # too few samples to judge
    admission.observe(0.1, 0.2)
    refused = admission.refusal(0.1)
    assert refused is not None and refused.retry_after_s == 2.0
    assert "200 ms" in refused.message and "bound 50 ms" in refused.message
    assert admission.refusal(2.2) is None  # the late frames are older than the window


def test_a_few_stalls_among_many_timely_frames_do_not_refuse() -> None:
    admission = Admission(0.05, min_samples=10)
    for i in range(200):
        admission.observe(i * 0.005, 0.3 if i % 50 == 0 else 0.01)
    assert admission.refusal(1.0) is None


def test_a_bound_of_zero_never_refuses() -> None:
    admission = Admission(0.0, min_samples=1)
    admission.observe(0.0, 10.0)
    assert admission.refusal(0.0) is None
