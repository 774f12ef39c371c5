"""`python -m torch_fp8gemm`: verify every op and, on a GPU, print the benchmark table."""
import sys

from .bench.gemm import main

sys.exit(main())
