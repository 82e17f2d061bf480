"""Speed and cost: the engine against hand-written loops, the command line's start-up, per-method overhead,
packed against unpacked runs, GPU- and CPU-hour estimates."""
