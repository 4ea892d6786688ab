"""Load test and benchmark of the streaming service.

`accounting` holds the per-stream bookkeeping (pacing, loss, added latency) that both load
generators share: the Locust user (`locustfile`) and the asyncio driver (`drive`) that
`bench` runs at every level of its ramp. `naive_server` is the per-session baseline.
"""
