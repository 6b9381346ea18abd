from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("pipeline", "0015_task_pull_request_outcome")]

    operations = [
        migrations.AddField(
            model_name="repository",
            name="workflow_text",
            field=models.TextField(
                blank=True,
                help_text="A workflow kept in TAC-X for this repository (set on its dashboard page): when set, its tasks use it "
                "instead of the repository's .tac/workflow.yaml. A task's own override still comes first.",
            ),
        ),
    ]
