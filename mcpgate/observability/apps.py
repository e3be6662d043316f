"""Django app config for observability: sets tracing up once per process, when the apps are loaded."""

from django.apps import AppConfig

from . import tracing


class ObservabilityConfig(AppConfig):
    """Tracing is configured here; the metrics' signal receivers are connected by ``metrics`` itself.

    ``metrics`` imports models (the audit trail's), so this module, imported before the models
    are, cannot import it; every serving process imports it at start-up anyway (see there).
    """

    name = "mcpgate.observability"
    label = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        tracing.configure_from_environment()
