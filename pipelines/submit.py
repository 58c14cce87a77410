"""Submit a compiled pipeline to a Kubeflow Pipelines endpoint with kfp.Client."""

from __future__ import annotations

from pathlib import Path

from tailsynth.errors import ServiceError

from .compile import COMPILED_DIR
from .profiles import profile as resolve_profile

SERVICE_ACCOUNT = "tailsynth-pipeline-runner"  # k8s/pipeline/base/rbac.yaml


class SubmitError(ServiceError):
    """The Kubeflow Pipelines endpoint could not be reached or refused the run."""


def check_reachable(host: str, timeout: float = 5.0) -> None:
    """Fail fast with a clear message instead of kfp.Client's long retries on a dead endpoint."""
    import urllib.error
    import urllib.request

    url = host.rstrip("/") + "/apis/v2beta1/healthz"
    try:
        urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - the user gave this URL
    except urllib.error.HTTPError:
        return  # the server answered (maybe 401/403 without a token): reachable
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise SubmitError(f"Kubeflow Pipelines endpoint {host} is unreachable ({reason}); check --host "
                          "(e.g. http://localhost:8080 after `kubectl port-forward -n kubeflow svc/ml-pipeline-ui "
                          "8080:80`) and your network") from e


def submit(host: str, source: str, data_revision: str, profile: str = "paper", token: str | None = None,
           namespace: str | None = None, experiment: str = "tailsynth", pipeline: str = "train_augment",
           run_name: str | None = None, **overrides) -> str:
    """Create a run of the committed compiled PIPELINE; returns the run id."""
    import kfp

    package = COMPILED_DIR / f"{pipeline}.yaml"
    if not package.is_file():
        raise SubmitError(f"{package}: compiled pipeline not found; run `tailsynth pipeline compile`")
    arguments = {"source": source, "data_revision": data_revision}
    if pipeline == "train_augment":
        arguments.update(resolve_profile(profile, **overrides))
    else:
        arguments.update(overrides)
    check_reachable(host)
    try:
        client = kfp.Client(host=host, existing_token=token, namespace=namespace or "kubeflow")
        run = client.create_run_from_pipeline_package(
            str(package), arguments=arguments, experiment_name=experiment, namespace=namespace,
            run_name=run_name or f"{pipeline}-{profile}", service_account=SERVICE_ACCOUNT)
    except Exception as e:  # the server's answer (auth, validation) is the useful part
        raise SubmitError(f"{host}: submitting {Path(package).name} failed: {e}") from e
    return run.run_id
