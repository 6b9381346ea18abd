from django.apps import AppConfig


class PipelineConfig(AppConfig):
    default_auto_field = 'django.db.models.BigAutoField'
    name = 'pipeline'

    def ready(self) -> None:
        from django_q.signals import post_spawn

        # The cycle this breaks: Django loads this AppConfig before the models, and slots imports
        # the models, so slots is imported once the app registry is ready (AppConfig.ready).
        from . import slots

        # Each django-q2 worker process is one stage slot (admission counts the live ones).
        post_spawn.connect(slots.on_post_spawn, dispatch_uid="tacx-stage-slot")
