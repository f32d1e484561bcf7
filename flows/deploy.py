"""The scheduled deployments (retraining, recalibration), served with one command.

`llata pipeline serve` builds a deployment of the `retrain` flow with the cron from
`params.yaml` (`pipeline.schedule`), and one of the `recalibrate` flow with
`pipeline.recalibration.schedule` (unless that is null), and serves them: the process
registers the deployments with the Prefect API it is pointed at (`PREFECT_API_URL`, e.g. a
local `prefect server start`), then runs each scheduled flow run itself until it is
stopped. For production work pools (a CPU process pool and a GPU pool) see `prefect.yaml`
at the project root.
"""

from __future__ import annotations

from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron
from pydantic import BaseModel

from flows.config import PipelineConfig
from flows.params import ScheduleParams
from flows.recalibrate import RecalibrateRequest, recalibrate
from flows.retrain import RetrainRequest, retrain

DEPLOYMENT_NAME = "llata-retrain"
RECALIBRATE_DEPLOYMENT_NAME = "llata-recalibrate"


def _deployment(
    flow: Flow,
    schedule: ScheduleParams,
    request: BaseModel,
    *,
    name: str,
    tags: list[str],
    description: str,
) -> RunnerDeployment:
    # Validate the cron with Prefect's own schema before anything is registered.
    CronSchedule(cron=schedule.cron, timezone=schedule.timezone)
    deployment = flow.to_deployment(
        name=name,
        schedules=[Cron(schedule.cron, timezone=schedule.timezone)],
        parameters={"request": request.model_dump(mode="json")},
        tags=tags,
        description=f"{description} ({schedule.cron} {schedule.timezone})",
        # The module path works from any working directory of the runner.
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    assert isinstance(deployment, RunnerDeployment)  # the sync form (async_dispatch)
    return deployment


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
    return _deployment(
        retrain,
        cfg.params.schedule,
        request,
        name=name,
        tags=["llata", f"profile-{request.profile}"],
        description="Scheduled retraining of LLaTA",
    )


def build_recalibrate_deployment(
    cfg: PipelineConfig,
    request: RecalibrateRequest,
    *,
    name: str = RECALIBRATE_DEPLOYMENT_NAME,
) -> RunnerDeployment | None:
    """A deployment of `recalibrate` on `pipeline.recalibration.schedule`.

    Args:
        cfg: The validated pipeline configuration.
        request: The flow parameter every scheduled run receives.
        name: Deployment name (`recalibrate/<name>` in the UI).

    Returns:
        The deployment, or None when the schedule is null (no scheduled recalibration).
    """
    schedule = cfg.params.recalibration.schedule
    if schedule is None:
        return None
    return _deployment(
        recalibrate,
        schedule,
        request,
        name=name,
        tags=["llata", "recalibration"],
        description="Scheduled recalibration of the production model's intervals",
    )


def serve_scheduled(
    cfg: PipelineConfig,
    request: RetrainRequest,
    *,
    name: str,
    recalibrate_request: RecalibrateRequest | None = None,
    recalibrate_name: str = RECALIBRATE_DEPLOYMENT_NAME,
) -> None:
    """Register the scheduled deployments and run their flow runs until interrupted."""
    from prefect import serve

    deployments = [build_deployment(cfg, request, name=name)]
    if recalibrate_request is not None:
        recal = build_recalibrate_deployment(cfg, recalibrate_request, name=recalibrate_name)
        if recal is not None:
            deployments.append(recal)
    serve(*deployments)
