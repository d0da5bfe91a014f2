"""Command handlers: `(args, cfg) -> exit code`, one module per area, imported on demand."""
