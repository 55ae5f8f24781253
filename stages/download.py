"""Stage `download`: MNIST's four IDX files and CIFAR-10's binary archive, verified.

From the official URLs (official MD5s), or from DATA_MIRROR, a folder or URL laid out as
`<dataset>/<file>` with a SHA256SUMS file (e.g. DATA_MIRROR=../shared/datasets).
"""

import os

from dlcourse.course import data
from dlcourse.pipeline.layout import RAW
from dlcourse.pipeline.stage import stage


def main() -> None:
    mirror = os.environ.get("DATA_MIRROR") or None
    with stage("download", tags={"data.mirror": mirror or "official"}) as job:
        for dataset in data.SOURCES:
            files = data.download(dataset, RAW, mirror=mirror, **job.params.download.model_dump())
            job.run.log_metrics({f"{dataset}.bytes": sum(f.stat().st_size for f in files)})
        data.extract_tar(RAW / "cifar10" / "cifar-10-binary.tar.gz", RAW / "cifar10" / "extracted")


if __name__ == "__main__":
    main()
