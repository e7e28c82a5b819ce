"""Adapters: outside methods behind ddbench's interfaces (condensers, published-set loaders)."""
