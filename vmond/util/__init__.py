"""Small helpers every layer may use: the bus, rate limits, workers, files, passwords."""
