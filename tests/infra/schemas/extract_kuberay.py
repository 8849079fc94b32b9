"""Extract the ``ray.io/v1`` openAPIV3Schema of KubeRay's RayCluster and RayJob CRDs into this folder.

The schemas the manifests under ``infra/k8s/`` are validated against (``tests/infra/test_manifests.py``) are
vendored, not fetched at test time. To move to another KubeRay release::

    git clone --bare https://github.com/ray-project/kuberay /tmp/kuberay.git
    python tests/infra/schemas/extract_kuberay.py /tmp/kuberay.git --ref v1.7.0

then update the release and commit in ``NOTICE.md`` and ``KUBERAY_RELEASE`` in ``tests/infra/manifests.py``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent

#: CRD file in KubeRay's repository -> schema file written here.
CRDS = {
    "ray-operator/config/crd/bases/ray.io_rayclusters.yaml": "raycluster-v1.json",
    "ray-operator/config/crd/bases/ray.io_rayjobs.yaml": "rayjob-v1.json",
}


def extract(git_dir: str, ref: str, *, version: str = "v1") -> list[Path]:
    """Write the ``version`` schema of each CRD at ``ref`` of the KubeRay git directory; returns the files."""
    written = []
    for crd_path, name in CRDS.items():
        text = subprocess.run(
            ["git", "-C", git_dir, "show", f"{ref}:{crd_path}"], check=True, capture_output=True, text=True
        ).stdout
        crd = yaml.safe_load(text)
        (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
        out = HERE / name
        out.write_text(json.dumps(served["schema"]["openAPIV3Schema"], sort_keys=True) + "\n")
        written.append(out)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("git_dir", help="a clone (bare or not) of github.com/ray-project/kuberay")
    parser.add_argument("--ref", default="v1.7.0", help="tag or commit (default: v1.7.0)")
    args = parser.parse_args()
    for path in extract(args.git_dir, args.ref):
        print(path)


if __name__ == "__main__":
    main()
