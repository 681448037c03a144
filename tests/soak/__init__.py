"""The soak (``make soak``): hours of mixed load and faults, sampled and judged for leaks."""
