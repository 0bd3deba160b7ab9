"""Evaluation (paper §4): one function per table/figure, the same ones behind ``deid eval ...``.

- :mod:`metrics`     TPR@FAR (thresholds from the other folds' mismatched pairs), 10-fold accuracy,
                     identification rank, landmark NME, pixel and descriptor distance
- :mod:`lfw`         ``pairs.txt`` parsing (any LFW layout; missing images → DeidError), Table 5
- :mod:`gallery`     mean-embedding gallery index (resumable, .npy + names), batched ranking (Table 4)
- :mod:`faces`, :mod:`embed`  folder-per-person datasets, cached landmark pass and evaluator embeddings
- :mod:`baselines`   face blur (σ matched to a pixel distance), pixelation, the [41]-style swap
- :mod:`tables`      Table 3/4/5 builders and the CSV + Markdown writer (``paper`` column)
- :mod:`lambda_sweep` Fig. 9; :mod:`attributes` NME / head pose / detection retention;
  :mod:`naturalness` high-frequency luma/chroma ratios in the face hull, YuNet retention, NME,
  identity, per condition (real, de-ID, blur, pixelation);
  :mod:`video_metrics` flicker + identity consistency; :mod:`user_study` Table 2 kit
- :mod:`run`         drivers (evaluators, de-ID transform from a checkpoint); :mod:`commands` the CLI

Evaluators are independent recognizers (``facenet-casia``, ``sface``, ``arcface`` from local
weights, ``facenet-vggface2``); ``dlib`` is the loss network and only ever an extra, labelled row.
"""
