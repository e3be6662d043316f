"""What operators see of a running mcpgate: Prometheus metrics, OpenTelemetry traces, JSON logs, readiness."""
