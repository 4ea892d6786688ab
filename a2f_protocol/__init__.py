"""The wire protocol, defined once: JSON control messages and binary frames.

Clients, the load test and the gateway all import these modules; none of them does I/O.
"""

DEFAULT_PORT = 8765  # the gateway's port (WebSocket and HTTP) unless told otherwise
LOCAL_URL = f"ws://127.0.0.1:{DEFAULT_PORT}/"  # a gateway on this machine, as tools default to
ACE_PORT = 52000  # NVIDIA's Audio2Face-3D gRPC API (the NIM's port), served beside it
ACE_FPS = 30  # that API's frame rate, the NIM's, whatever the WebSocket streams at
