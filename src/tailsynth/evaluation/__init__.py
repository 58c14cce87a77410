"""The experiment engine: every comparison of classifiers trained on real (and synthetic) data.

- replicates.py  (image set, seed) replicates and their split manifests, in the one fold layout of
                 `tailsynth.data.splits.fold_assignments` (fold i is the reported `test` part)
- runs.py        one training run per (arm, replicate), resumable, and its held-out predictions (predictions.py)
- stats.py       per-arm tables over replicates and the paired statistics (bootstrap intervals, McNemar)
- decision.py    the pre-registered decision rule of the augmentation experiment
- tables.py      the markdown tables
- methods.py     `tailsynth experiment --folds`: real-only long-tail methods on the replicate protocol
- augment.py     `tailsynth experiment-augment`: the arms with synthetic data
- quick.py       `tailsynth experiment` without --folds: methods x seeds, trained on train, read on val

Evaluation comes after classification in the package order: it imports the classifier stage and the OOD stage, and
nothing before it imports evaluation.
"""
