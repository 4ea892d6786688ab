"""The wire protocol, defined once: JSON control messages and binary frames.

Clients, the load test and the gateway all import these modules; none of them does I/O.
"""

DEFAULT_PORT = 8765  # the gateway's port (WebSocket and HTTP) unless told otherwise
LOCAL_URL = f"ws://127.0.0.1:{DEFAULT_PORT}/"  # a gateway on this machine, as tools default to
