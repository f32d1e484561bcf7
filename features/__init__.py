"""Data contracts at the pipeline's edge: the Great Expectations suite and the Feast repo.

- `frame`: the forecasting frame's specification (`FrameSpec`), loading and column rules;
  free of GX and Feast so every consumer can share it cheaply.
- `validation`: the GX suite (`validate_frame`), its report and Data Docs.
- `entities`, `sources`, `views`, `services`: the Feast objects, one kind per module, built
  by functions because channel names depend on the dataset; `definitions` assembles them.
- `store`: apply, materialize, push and read (`prepare_feature_repo`, `get_training_frame`,
  `get_training_frame_asof`, `push_context_window`, `read_context_window`).
"""
