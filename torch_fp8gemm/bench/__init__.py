"""The benchmarks behind ``python -m torch_fp8gemm`` and the suites: gemm (the main job: dense and MoE
GEMMs against torch's FP8/bf16 GEMMs, verification, timing helpers), layers (FP8Linear / FP8MoEExperts
forward and training steps against bf16 and rowwise FP8), quant (the quantization kernels)."""
