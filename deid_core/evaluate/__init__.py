"""Evaluation (paper §4): one module per table, the same functions behind ``deid eval ...`` and
the notebooks.

- :mod:`distances`   Table 3: RGB and descriptor distance, de-ID vs the baselines
- :mod:`rank`        Table 4: rank of the true identity (large gallery; small sample version);
                     :mod:`gallery` the mean-embedding gallery index (resumable, batched ranking)
- :mod:`lfw`         Table 5: ``pairs.txt`` parsing (any LFW layout), TPR@FAR, 10-fold accuracy
- :mod:`user_study`  Table 2 kit: sheets, answer keys, scoring, automatic observer
- :mod:`lambda_sweep` Fig. 9; :mod:`attributes` NME / head pose / detection retention;
  :mod:`naturalness` high-frequency luma/chroma ratios, YuNet retention, per condition;
  :mod:`video_metrics` flicker + identity consistency;
  :mod:`recognizer_lfw` the recognisers' own LFW check
- shared: :mod:`conditions` (evaluators by name, de-ID transform of a checkpoint, blur and
  pixelation baselines, faces of a folder), :mod:`baselines`, :mod:`metrics`, :mod:`faces`,
  :mod:`embed` (cached landmark pass and evaluator embeddings), :mod:`table_writer`

Evaluators are independent recognizers (``facenet-casia``, ``sface``, ``arcface`` from local
weights, ``facenet-vggface2``); ``dlib`` is the loss network and only ever an extra, labelled row.
"""
