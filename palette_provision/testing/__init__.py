"""The public test kit: a fake provider with fault knobs, the provider contract suite, API simulators."""
