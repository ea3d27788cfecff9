"""Inference: the one batching loop and the model runners every scorer shares.

- `batching.score_messages`: windows of many sources (files, store clips, service
  requests) batched together into one model call, results handed back per source.
"""
