"""The benchmark kit for a bare GPU host: built here by ``make gpu-kit``, run there by ``run.sh``.

``build`` assembles the kit (the project, Python 3.12 wheels of what the host lacks, the
embedded Triton server trimmed to what this project uses); ``run`` checks the host, installs
from the kit without a network and starts ``bench_gpu``, which is ``make bench`` with the
network on the GPU and the GPU's utilisation next to every level.
"""
