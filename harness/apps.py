from django.apps import AppConfig


class HarnessConfig(AppConfig):
    """Test, demo and bench harnesses: the scripted model server, the CLI-run helpers, the fake
    runner, and ``manage.py demo`` / ``serve_model``. No product module imports this app."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "harness"
