"""Triton kernels for the GPU hot paths, each with a pure-PyTorch reference: `gradproj` (Gram-space gradient
surgery: G = g gᵀ and Σ w_k g_k) and `moe` (top-k routing, sort-based dispatch, combine)."""
