import os

# Triton's interpreter runs the GGeM Triton kernel on CPU tensors in the tests
# (poolwise.kernels.ggem_triton.interpreted). Triton wraps its own library functions at import,
# compiled or interpreted, so the switch must be in the environment before anything imports
# Triton; no test compiles Triton code for a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

import torch

torch.set_num_threads(2)
