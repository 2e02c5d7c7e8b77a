"""Task relatedness: which tasks help which.

- `transfer`: the pairwise transfer study (Changpinyo et al. 2018) — STL, pairs, All, All-but-one and
  Oracle settings over several seeds, the benefit/harm rule and the analysis; `transfer_study` runs a study
  (resumable and spreadable runs); `transfer_report` writes its table, graph, heatmap and JSON; `engine_run`
  trains and scores one run.
- `gradient_affinity`: per-pair task-gradient cosines logged by gradient surgery, plots, clustering.
- `task_embeddings`: task tokens prepended to the encoder input (TE⊕ENC), export and 2-D plot.
Submodules are imported on use (plotting pulls in matplotlib).
"""
