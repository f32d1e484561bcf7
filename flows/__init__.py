"""The production pipeline around llata_core: DVC stages, Prefect flows and deployments.

- `params`: the typed `pipeline:` section of params.yaml and the file layout.
- `datasource`: `llata data pull` (DVC remote, canonical URL, mirror, then synthetic).
- `stages` (validate, features, backbone, train), `evaluate` and `registry_stages`
  (register, promote, recalibrate): the one implementation the command line, `dvc.yaml`
  and the Prefect tasks share.
- `retrain`: the Prefect flow; `recalibrate`: production's intervals on the newest data;
  `deploy`: their scheduled deployments.
- `cli`: the `llata data|validate|features|pipeline` commands.
"""
