"""Training pipeline of the default audio-to-face network: ``python -P -m training.pipeline``.

``-P`` keeps the working directory off ``sys.path``: from the repository root, the top-level
``triton/`` folder (installed as ``a2f_triton``) would otherwise be found as a namespace package
named ``triton`` by torch's probe for its optional GPU compiler of that name.
"""
