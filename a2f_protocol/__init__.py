"""The wire protocol, defined once: JSON control messages and binary frames.

Clients, the load test and the gateway all import these modules; none of them does I/O.
"""
