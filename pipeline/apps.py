from django.apps import AppConfig


class PipelineConfig(AppConfig):
    default_auto_field = 'django.db.models.BigAutoField'
    name = 'pipeline'

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from . import slots

        # Each django-q2 worker process is one stage slot (admission counts the live ones).
        post_spawn.connect(slots.on_post_spawn, dispatch_uid="tacx-stage-slot")
