"""Response bodies and stream frames, one module per endpoint family."""
