"""ddbench: a benchmark harness for dataset distillation and data pruning."""

__version__ = "0.1.0"
