"""Audio2Face-3D compatible WebSocket gateway: speech in, blendshape frames out, via Triton."""
