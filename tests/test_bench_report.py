"""`make bench`'s cost lines: CPU per frame by process and by Triton's parts, at each stack's
largest level held, and the bytes a frame moves to Triton."""

from __future__ import annotations

from loadtest.bench import cost_per_frame


def run(stack: str, streams: int, p99_ms: float, cpu: dict[str, float]) -> dict:
    return {
        "stack": stack, "fps": 30, "streams": streams, "connected": streams, "lost": 0,
        "disorder": 0, "errors": 0, "p99_ms": p99_ms, "frames_per_s": streams * 30.0,
        "cpu_cores": cpu, "triton_bytes_per_frame": 33280.0,
    }  # fmt: skip


def test_costs_are_per_frame_at_the_largest_level_held_with_triton_by_part() -> None:
    cpu = {
        "gateway": 0.48, "gateway/python3.11": 0.48, "loadgen": 0.24, "loadgen/python3.11": 0.24,
        "triton": 0.96, "triton/tritonserver": 0.24, "triton/a2f_net": 0.72,
        "triton/a2f_span": 0.0,
    }  # fmt: skip
    results = [
        run("triton", 32, 9.0, {k: v / 2 for k, v in cpu.items()}),
        run("triton", 64, 20.0, cpu),
        run("triton", 80, 45.0, cpu),  # not held: p99 over 30 ms
    ]
    assert cost_per_frame(results) == [
        "- CPU us per frame, triton at 30 fps, 64 streams: gateway 250, loadgen 125, "
        "a2f_net 375, tritonserver 125; inputs to Triton 33,280 bytes per frame"
    ]


def test_a_stack_that_held_no_level_has_no_cost_line() -> None:
    assert cost_per_frame([run("naive", 8, 80.0, {"server": 1.0})]) == []
