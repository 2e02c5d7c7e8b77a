"""The largest sizes a config or a command accepts, in one place, each set where something real stops working past
it (a kernel's limit, a model no machine builds): a value past one is refused before anything is read or built,
naming the key or option, the value and the limit, instead of failing in an allocator or running for hours.

A limit that depends on the model or the data (beams at most the vocabulary, shots at most the rows there are) is
checked where those are known, against them; the constants here are the ones that hold whatever the model."""
from __future__ import annotations

#: experts per MoE layer at most: the Triton router holds every expert's logit of a token in one tile, at most
#: Triton's largest tensor, 2**20 elements (`t2t_kernels.moe`), so a layer with more experts could not route on a GPU
#: (and a run that passes its checks on the CPU's reference backend must train on one too)
MAX_EXPERTS = 1 << 20

#: parameters of a model whose sizes a run sets (model.dims, model.moe) at most: ten times the largest T5-family model
#: published, Switch-C (1.6e12 parameters); its fp32 weights alone would take 40 TB
MAX_MODEL_PARAMETERS = 10 ** 13

#: tokens a generation adds at most (`--max-new-tokens`, `evaluation.max_new_tokens`, whose default is
#: data.max_target_length): 2**16, 128 times the longest target the packaged configs train on (512), and already
#: minutes of decoding per input step by step; a typo's 10**12 would decode for years on a model that never ends
MAX_NEW_TOKENS = 1 << 16

#: seeded draws per epoch `mixture show --draws` makes at most: its realised shares are printed to 4 decimals, and from
#: 10**8 draws a share's standard error, sqrt(p(1 - p) / n) <= 0.5 / sqrt(n), is 5e-5 at most, under half the last
#: digit: more draws change nothing the table shows, and take longer than the command is worth
MAX_SHOWN_DRAWS = 10 ** 8

#: epochs `mixture show --epochs` tabulates at most: one column per epoch on every line of the table (and a tick per
#: epoch in --plot), so 1000 epochs already print lines of 8000 characters
MAX_SHOWN_EPOCHS = 1000
