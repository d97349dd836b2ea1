"""The upstream stage: models → backends, circuit breakers, failover, streaming, usage."""
