"""Data: original-format readers, long-tail subsets, tensor-resident loaders, downloads."""
