"""The two component flavours: CPU stages and CUDA stages differ only in their image.

Scheduling (accelerator, node pool, secrets, retries) is a property of a task in a pipeline, not of
the component, and is applied in pipelines/cluster.py. The images carry tailsynth and kfp, so no
runtime `pip install` is injected (install_kfp_package=False): stages start fast and offline. The image
is a placeholder here, resolved at compile time (components.images), so importing reads nothing.
"""

from __future__ import annotations

import functools

from kfp import dsl

from .images import PLACEHOLDERS

cpu_component = functools.partial(dsl.component, base_image=PLACEHOLDERS["cpu"], install_kfp_package=False)
gpu_component = functools.partial(dsl.component, base_image=PLACEHOLDERS["cuda"], install_kfp_package=False)
