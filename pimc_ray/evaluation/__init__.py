"""Downstream evaluation: the PIMC paper's tasks on the datasets as they are distributed.

- :mod:`~pimc_ray.evaluation.pastis`: PASTIS read from its own layout into forecasting and classification pixels;
- :mod:`~pimc_ray.evaluation.eurosat`: EuroSAT multispectral read from its class folders, and its splits;
- :mod:`~pimc_ray.evaluation.towers`: the encoders scored (a checkpoint's tower, and its random initialisation)
  and their inputs (recurrence plots by the project's kernel, images cut into the encoder's patches);
- :mod:`~pimc_ray.evaluation.probes`: linear probes and fine-tuning;
- :mod:`~pimc_ray.evaluation.metrics`: RMSE, confusion matrix, overall accuracy, IoU;
- :mod:`~pimc_ray.evaluation.tasks`: :func:`evaluate_pastis` and :func:`evaluate_eurosat`, the whole evaluations;
- :mod:`~pimc_ray.evaluation.report`: their :class:`Report`, with the paper's figures beside ours.

Evaluation uses data/ (the band order, the regular time grid), kernels/ (indices, recurrence plots) and models/
(encoders, checkpoints, the classification head). Names load on first use, so the loaders do not import torch.
"""

from pimc_ray._exports import lazy_exports

_API = {
    "ClassifySet": "pimc_ray.evaluation.pastis",
    "ForecastSet": "pimc_ray.evaluation.pastis",
    "PastisDataset": "pimc_ray.evaluation.pastis",
    "classify_set": "pimc_ray.evaluation.pastis",
    "forecast_set": "pimc_ray.evaluation.pastis",
    "open_pastis": "pimc_ray.evaluation.pastis",
    "EuroSATCatalog": "pimc_ray.evaluation.eurosat",
    "EuroSATImages": "pimc_ray.evaluation.eurosat",
    "list_eurosat": "pimc_ray.evaluation.eurosat",
    "read_images": "pimc_ray.evaluation.eurosat",
    "split_from_files": "pimc_ray.evaluation.eurosat",
    "stratified_split": "pimc_ray.evaluation.eurosat",
    "EncoderVariant": "pimc_ray.evaluation.towers",
    "encoder_variants": "pimc_ray.evaluation.towers",
    "LinearRegressor": "pimc_ray.models.heads",
    "TrainOptions": "pimc_ray.evaluation.probes",
    "Report": "pimc_ray.evaluation.report",
    "evaluate_eurosat": "pimc_ray.evaluation.tasks",
    "evaluate_pastis": "pimc_ray.evaluation.tasks",
}

__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
