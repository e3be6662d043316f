"""Django app config for observability: wires metrics and tracing once the apps are loaded."""

from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "mcpgate.observability"
    label = "observability"
    verbose_name = "Observability"
