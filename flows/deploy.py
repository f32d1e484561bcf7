"""The scheduled retraining deployment, served with one command.

`llata pipeline serve` builds a deployment of the `retrain` flow with the cron from
`params.yaml` (`pipeline.schedule`) and serves it: the process registers the deployment
with the Prefect API it is pointed at (`PREFECT_API_URL`, e.g. a local `prefect server
start`), then runs each scheduled flow run itself until it is stopped. For production
work pools (a CPU process pool and a GPU pool) see `prefect.yaml` at the project root.
"""

from __future__ import annotations

from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

from flows.params import PipelineConfig
from flows.retrain import RetrainRequest, retrain

DEPLOYMENT_NAME = "llata-retrain"


def build_deployment(
    cfg: PipelineConfig, request: RetrainRequest, *, name: str = DEPLOYMENT_NAME
) -> RunnerDeployment:
    """A deployment of `retrain` on the schedule from params.yaml.

    Args:
        cfg: The validated pipeline configuration (its schedule is used).
        request: The flow parameter every scheduled run receives.
        name: Deployment name (`retrain/<name>` in the UI).

    Returns:
        The deployment, ready for `prefect.serve` or `.apply()`.
    """
    schedule = cfg.params.schedule
    # Validate the cron with Prefect's own schema before anything is registered.
    CronSchedule(cron=schedule.cron, timezone=schedule.timezone)
    deployment = retrain.to_deployment(
        name=name,
        schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
        parameters={"request": request.model_dump(mode="json")},
        tags=["llata", f"profile-{request.profile}"],
        description=f"Scheduled retraining ({schedule.cron} {schedule.timezone}) of LLaTA.",
        # The module path works from any working directory of the runner.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)  # the sync form (async_dispatch)
    return deployment


def serve_scheduled(cfg: PipelineConfig, request: RetrainRequest, *, name: str) -> None:
    """Register the scheduled deployment and run its flow runs until interrupted."""
    from prefect import serve

    serve(build_deployment(cfg, request, name=name))
