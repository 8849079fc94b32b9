"""Ray job: PIMC pretraining with Ray Train (DDP), resumable, exporting the RP encoder for the embedding job.

    ray job submit --address http://127.0.0.1:8265 -- python jobs/pretrain.py \
        --aoi "$(pimc archive bbox --tile 32TQR)" --aoi "$(pimc archive bbox --tile 32TQS)" \
        --start 2022-01-01 --end 2022-12-31 --stac-url http://127.0.0.1:7822 \
        --out data/models/pimc-demo --train-steps 300 --workers 2

Checkpoints go to ``--storage`` (default: ``runs/`` beside ``--out``) under ``--name`` (default: the name of
``--out``); resubmitting the same command after the job was stopped resumes from the latest one. ``python
jobs/pretrain.py --help`` lists every option. Exit codes: see `--help` (0 success; 2 bad input, one line on
stderr, nothing written; 3 some tiles failed; 4 internal error).
"""

from pimc_ray.cli.jobs import pretrain_main

if __name__ == "__main__":
    raise SystemExit(pretrain_main())
