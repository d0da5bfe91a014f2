"""Operations: what a person or a log pipeline sees of a run; every stage may import it.

    log.py       the one place for logging: JSON lines on stdout, redaction of secrets
    metrics.py   Prometheus metrics and the liveness check, served on the event loop
    meters.py    busy-time meters: how much of the wall time each stage spent working
    progress.py  the live progress line on stderr
    phases.py    one line per phase of a run's start
    tracking.py  Weights & Biases, when a key is set
"""
