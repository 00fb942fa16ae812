"""``aigq deploy render --overlay NAME``: the Kubernetes manifests of deploy/k8s, rendered.

The manifests are a kustomize base with overlays (deploy/k8s/README.md). Rendering is
kustomize's own, through ``kubectl kustomize`` (built into kubectl since 1.14), so what this
prints is exactly what ``kubectl apply -k deploy/k8s/overlays/NAME`` would apply; redoing
kustomize in Python would be a second implementation to keep in step with the first.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from aigq.cli_kit import fails_cleanly
from aigq.errors import ConfigError, ServiceError

K8S_DIR = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
RENDER_TIMEOUT_S = 60.0


def overlays(k8s_dir: Path = K8S_DIR) -> list[str]:
    """The overlay names: the folders of ``overlays/`` that hold a kustomization."""
    root = k8s_dir / "overlays"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "kustomization.yaml").is_file())


def render(overlay: str, k8s_dir: Path = K8S_DIR, kubectl: str | None = None) -> str:
    """The overlay's manifests as one multi-document YAML text.

    Raises ConfigError for an unknown overlay and ServiceError when kubectl is missing or
    kustomize fails (its message included).
    """
    names = overlays(k8s_dir)
    if overlay not in names:
        raise ConfigError(f"no overlay {overlay!r} in {k8s_dir / 'overlays'}; have: {names}")
    binary = kubectl or shutil.which("kubectl")
    if binary is None:
        raise ServiceError(
            "kubectl is not installed: it renders the manifests (`kubectl kustomize`); "
            "install it, or run `kustomize build` on deploy/k8s/overlays/" + overlay
        )
    command = [binary, "kustomize", str(k8s_dir / "overlays" / overlay)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RENDER_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"{' '.join(command)}: {exc}") from exc
    if done.returncode != 0:
        raise ServiceError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


def render_command(
    overlay: Annotated[str, typer.Option(help="deploy/k8s/overlays/NAME: local or gpu")],
) -> None:
    """Print an overlay's Kubernetes manifests (kustomize's output: pipe it to kubectl apply)."""
    typer.echo(render(overlay), nl=False)


def register(app: typer.Typer) -> None:
    """Add ``aigq deploy ...`` to the root command (:mod:`shell.cli`)."""
    deploy_app = typer.Typer(help="Kubernetes manifests (deploy/k8s).")
    deploy_app.command("render")(fails_cleanly(render_command))
    app.add_typer(deploy_app, name="deploy")
