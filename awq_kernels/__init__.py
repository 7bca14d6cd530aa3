"""awq-kernels: GPU kernels for AWQ 4-bit LLM inference.

The llm-awq compatible modules are `awq_inference_engine` and `ft_attention`; this package holds
the Python API over the same ops (`awq_kernels.ops`), the build-environment checks
(`awq_kernels.build_env`) and the `awq-kernels` command line tool. Importing it does not load the
compiled extensions, so `awq-kernels doctor` works even when they are broken.
"""

__version__ = "0.1.0"
