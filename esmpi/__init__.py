"""esmpi: OpenAI Evolution Strategies (Salimans et al. 2017) across MPI ranks."""

__version__ = "0.1.0"
