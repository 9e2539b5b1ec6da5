"""MLflow tracking: one MLflow run per model version, made by ``train`` and completed by
``evaluate``.

Where: ``tracking.uri``; empty means MLflow's own local default kept under the lake
(``sqlite:///<lake>/mlflow/mlflow.db``, artifacts in ``<lake>/mlflow/artifacts``), so that
a lake carries its own history. A tracking server (``http://host:5000``) or ``databricks``
works the same way (on Databricks the experiment is a workspace path, e.g.
``/Shared/twotower``).

What: the training settings as parameters; per epoch the loss and examples per second;
the towers, the preprocessor and ``model.json`` as artifacts; tags ``model_version``,
``run_id`` and ``features_run_id``. ``evaluate`` adds its metrics at K for the model and the
baselines to the run of the model version it evaluated.

Tracking never costs a trained model: when MLflow fails (a server down, a bad URI) the
model version is already published, and the stage says so in one line and goes on.
"""
from __future__ import annotations

import logging
import os

from lib.config import Config

log = logging.getLogger("twotower")


def tracking_uri(cfg: Config) -> str:
    if cfg.tracking.uri:
        return cfg.tracking.uri
    return "sqlite:///" + os.path.join(os.path.abspath(cfg.lake.path), "mlflow", "mlflow.db")


def _mlflow(cfg: Config):
    """mlflow, pointed at the configured store, and the experiment id."""
    import warnings
    # MLflow 3.17's SQLite store uses an SQLAlchemy loader that SQLAlchemy 2.1 deprecates.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"mlflow\..*")
    import mlflow
    # MLflow's own INFO lines (database migrations on first use) bury the stage's progress.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A tracking server that does not answer costs seconds, not MLflow's minutes of retries:
    # tracking is never worth holding up a finished model.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        os.makedirs(os.path.dirname(uri[len("sqlite:///"):]), exist_ok=True)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    if exp is not None:
        return mlflow, exp.experiment_id
    location = None
    if not cfg.tracking.uri:  # the local default: artifacts beside the database, not in ./mlruns
        location = "file://" + os.path.join(os.path.abspath(cfg.lake.path), "mlflow", "artifacts")
    return mlflow, mlflow.create_experiment(cfg.tracking.experiment, artifact_location=location)


def _warn(cfg: Config, what: str, e: Exception) -> None:
    first = (str(e).strip().splitlines() or [""])[0][:200]
    log.warning("MLflow tracking at %s failed while %s (%s: %s); the stage's outputs are published "
                "without it", tracking_uri(cfg), what, type(e).__name__, first)


def log_training(cfg: Config, model_dir: str, meta: dict, tags: dict) -> str:
    """Log a finished training as a new MLflow run; returns its MLflow run id ('' when off
    or failed). ``meta``: the model's ``model.json``; ``tags``: model_version, run_id, ..."""
    if not cfg.tracking.enabled:
        return ""
    try:
        mlflow, exp = _mlflow(cfg)
        params = {k: v for k, v in vars(cfg.train).items() if k not in ("hosts",)}
        params.update({"effective_learning_rate": meta.get("effective_learning_rate"),
                       "ranks": meta.get("num_proc"), "steps_per_epoch": meta.get("steps_per_epoch"),
                       "dense_dim": meta.get("dense_dim"), "resumed_from_epoch": meta.get("resumed_from_epoch")})
        with mlflow.start_run(experiment_id=exp, run_name=tags["model_version"], tags=tags) as run:
            mlflow.log_params({k: str(v) for k, v in params.items()})
            for epoch, loss in enumerate(meta["loss_history"], start=1):
                mlflow.log_metric("loss", float(loss), step=epoch)
            for epoch, rate in (meta.get("epoch_examples_per_s") or {}).items():
                mlflow.log_metric("examples_per_s", float(rate), step=int(epoch))
            mlflow.log_metric("train_seconds", float(meta.get("train_seconds", 0.0)))
            mlflow.log_artifacts(model_dir, artifact_path="model")
            return run.info.run_id
    except Exception as e:  # noqa: BLE001 - see the module docstring
        _warn(cfg, "logging the training", e)
        return ""


def log_evaluation(cfg: Config, model_version: str, results: dict, k: int) -> str:
    """Add ``results`` ({model: {metric: value}}) to the MLflow run of ``model_version`` as
    ``<metric>_at_<k>`` (the model) and ``<baseline>_<metric>_at_<k>``; returns the MLflow
    run id ('' when off, failed or the model version was trained without tracking)."""
    if not cfg.tracking.enabled:
        return ""
    try:
        mlflow, exp = _mlflow(cfg)
        found = mlflow.search_runs([exp], filter_string=f"tags.model_version = '{model_version}'",
                                   max_results=1, output_format="list")
        if not found:
            log.info("MLflow: no run of model version %s (trained without tracking); metrics not logged",
                     model_version)
            return ""
        run_id = found[0].info.run_id
        with mlflow.start_run(run_id=run_id):
            for model, metrics in results.items():
                prefix = "" if model == "two_tower" else f"{model}_"
                mlflow.log_metrics({f"{prefix}{m}_at_{k}": float(v) for m, v in metrics.items()})
        return run_id
    except Exception as e:  # noqa: BLE001 - see the module docstring
        _warn(cfg, "logging the evaluation", e)
        return ""
